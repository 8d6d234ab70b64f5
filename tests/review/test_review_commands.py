"""`factory review export|import` from the command line: one summary line, exit codes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow.parquet as pq

from factory.cli import main as review_main


def correct_first(review_file: str, caption: str) -> None:
    lines = Path(review_file).read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    first["corrected_caption"] = caption
    lines[0] = json.dumps(first)
    Path(review_file).write_text("\n".join(lines) + "\n", encoding="utf-8")


def round_trip(main, run, tmp_path, capsys) -> None:
    folder, out = str(tmp_path / "review"), str(tmp_path / "pairs.parquet")
    assert main(["review", "export", "--run", run.output, "--to", folder, "--n", "3"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1
    assert printed[0].startswith("review export: 3 of 7 scored captions (8 in the run)")
    correct_first(f"{folder}/review.jsonl", "A boat on the right.")

    assert main(["review", "import", "--review", folder, "--out", out]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [
        f"review import: 1 preference pairs from 3 items of {folder}/review.jsonl -> {out}; "
        "skipped: 2 no_correction"
    ]
    assert pq.read_table(out).column("chosen").to_pylist() == ["A boat on the right."]


def test_export_then_import(run, tmp_path, capsys):
    round_trip(review_main, run, tmp_path, capsys)


def test_csv_with_a_score_limit(run, tmp_path, capsys):
    folder = tmp_path / "review"
    argv = ["review", "export", "--run", run.output, "--to", str(folder)]
    assert review_main([*argv, "--format", "csv", "--max-score", "0.2"]) == 0
    with open(folder / "review.csv", encoding="utf-8-sig", newline="") as handle:
        assert [row["critic_score"] for row in csv.DictReader(handle)] == ["0.0", "0.125"]


def test_user_errors_exit_2_with_one_line(run, tmp_path, capsys):
    folder = str(tmp_path / "review")
    argv = ["review", "export", "--run", run.output, "--to", folder, "--n", "2"]
    assert review_main(argv) == 0
    capsys.readouterr()

    assert review_main(argv) == 2
    error = capsys.readouterr().err
    assert error.startswith("factory review export: ") and "not empty" in error
    assert review_main([*argv, "--overwrite"]) == 0
    capsys.readouterr()

    with open(f"{folder}/review.jsonl", "a", encoding="utf-8") as handle:
        handle.write("{not json\n")
    assert review_main(["review", "import", "--review", folder, "--out", folder + ".pq"]) == 2
    assert "review.jsonl, line 3: not valid JSON" in capsys.readouterr().err

    assert review_main(["review", "export", "--run", run.output, "--to", folder + "2", "--n", "0"])
    assert "n must be at least 1" in capsys.readouterr().err
