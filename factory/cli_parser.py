"""One argparse parser built from the commands' typed signatures.

Each command is a plain function with keyword parameters; a parameter's annotation says its
type and, through `Arg`, its help. `bool` becomes a switch, a sequence of strings a
repeatable flag, a parameter without a default a required flag. A command named with a
space ("review export") is a subcommand of its first word.
"""

from __future__ import annotations

import argparse
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Arg:
    """A parameter's help, and where argparse's defaults do not fit, its flag and choices."""

    help: str
    flag: str | None = None  # default: --the-parameter-name
    metavar: str | None = None
    choices: tuple[str, ...] | None = None


def build_parser(
    prog: str, description: str, commands: dict[str, Callable[..., int]], groups: dict[str, str]
) -> argparse.ArgumentParser:
    """`groups`: the help of each first word that holds subcommands."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    subparsers = {"": parser.add_subparsers(dest="command", required=True)}
    for name, function in commands.items():
        group, _, leaf = name.rpartition(" ")
        if group not in subparsers:
            holder = subparsers[""].add_parser(group, help=groups[group], description=groups[group])
            subparsers[group] = holder.add_subparsers(dest=f"{group} command", required=True)
        summary = inspect.getdoc(function) or ""
        sub = subparsers[group].add_parser(leaf, help=summary.split("\n")[0], description=summary)
        sub.set_defaults(_function=function, _name=name)
        hints = typing.get_type_hints(function, include_extras=True)
        for parameter in inspect.signature(function).parameters.values():
            _add_argument(sub, parameter, hints[parameter.name])
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> tuple[str, Any, dict]:
    """(the command's name, its function, its keyword arguments)."""
    values = vars(parser.parse_args(argv))
    function, name = values.pop("_function"), values.pop("_name")
    arguments = {key: value for key, value in values.items() if not key.endswith("command")}
    return name, function, arguments


def _add_argument(sub: argparse.ArgumentParser, parameter: inspect.Parameter, hint: Any) -> None:
    kind, arg = _unwrap(hint)
    if arg is None:
        raise TypeError(f"parameter {parameter.name!r} has no Arg(help=...) in its annotation")
    flag = arg.flag or "--" + parameter.name.replace("_", "-")
    options: dict[str, Any] = {"dest": parameter.name, "help": arg.help}
    if parameter.default is inspect.Parameter.empty:
        options["required"] = True
    else:
        options["default"] = parameter.default
    if kind is bool:
        options["action"] = "store_true"
    elif typing.get_origin(kind) in (list, tuple, Sequence):
        options.update(action="append", default=[], metavar=arg.metavar)
    else:
        options.update(type=kind, metavar=arg.metavar, choices=arg.choices)
    sub.add_argument(flag, **options)


def _unwrap(hint: Any) -> tuple[Any, Arg | None]:
    """The parameter's type without Optional, and its Arg."""
    arg = None
    if typing.get_origin(hint) is typing.Annotated:
        hint, *extras = typing.get_args(hint)
        arg = next((extra for extra in extras if isinstance(extra, Arg)), None)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [part for part in typing.get_args(hint) if part is not type(None)]
    return hint, arg
