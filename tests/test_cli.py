"""The one command line: every command is a typed function, parsed the same way."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import pytest

from factory import cli
from factory.cli_parser import Arg, build_parser, parse


def test_every_command_is_reachable_with_its_own_help(capsys):
    for name, function in cli.COMMANDS.items():
        with pytest.raises(SystemExit) as done:
            cli.main([*name.split(), "--help"])
        assert done.value.code == 0
        assert function.__doc__.split("\n")[0] in " ".join(capsys.readouterr().out.split())


def test_flags_follow_the_signature():
    def command(
        name: Annotated[str, Arg("a name")],
        count: Annotated[int, Arg("how many")] = 3,
        kind: Annotated[str, Arg("which", choices=("a", "b"))] = "a",
        limit: Annotated[float | None, Arg("at most")] = None,
        loud: Annotated[bool, Arg("say it")] = False,
        tags: Annotated[Sequence[str], Arg("a tag", "--tag", "TAG")] = (),
    ) -> int:
        """Do it."""
        return 0

    parser = build_parser("x", "test", {"group do": command}, {"group": "a group"})
    name, function, arguments = parse(
        parser, ["group", "do", "--name", "n", "--loud", "--tag", "t1", "--tag", "t2"]
    )
    assert (name, function) == ("group do", command)
    assert arguments == {
        "name": "n",
        "count": 3,
        "kind": "a",
        "limit": None,
        "loud": True,
        "tags": ["t1", "t2"],
    }
    _, _, arguments = parse(
        parser, ["group", "do", "--name", "n", "--count", "5", "--limit", "1.5"]
    )
    assert (arguments["count"], arguments["limit"], arguments["tags"]) == (5, 1.5, [])
    for wrong in (["group", "do"], ["group", "do", "--name", "n", "--kind", "c"]):
        with pytest.raises(SystemExit):  # a required flag missing, a choice not offered
            parse(parser, wrong)


def test_a_parameter_without_help_is_refused_when_the_parser_is_built():
    def command(name: str) -> int:
        return 0

    with pytest.raises(TypeError, match="'name' has no Arg"):
        build_parser("x", "test", {"do": command}, {})


def test_eval_needs_one_source_and_says_so_in_one_line(capsys):
    assert cli.main(["eval"]) == 2
    assert capsys.readouterr().err == "factory eval: give one of --predictions or --run\n"
    assert cli.main(["eval", "--predictions", "p.parquet", "--run", "out"]) == 2


def test_repeated_set_flags_all_apply(capsys):
    argv = ["config", "--set", "validation.min_side=64", "--set", "validation.max_side=900"]
    assert cli.main(argv) == 0
    shown = capsys.readouterr().out
    assert "min_side: 64" in shown and "max_side: 900" in shown
