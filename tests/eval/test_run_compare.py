"""`factory eval --run AFTER --baseline BEFORE` on two hand-built runs: every number checkable."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory.cli import main

FLAG = {"field": "caption_detailed", "rule": "too_short", "detail": ""}


def write_run(folder, captions: list[str], scores: list[float], flagged: int) -> str:
    rows = [
        {
            "uri": f"img-{n}.png",
            "input_index": n,
            "caption_detailed": caption,
            "critic_score": score,
            "health_flags": [FLAG] if n < flagged else [],
        }
        for n, (caption, score) in enumerate(zip(captions, scores, strict=True))
    ]
    (folder / "captions").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "captions" / "part-0.parquet")
    return str(folder)


def test_a_run_beside_its_baseline(tmp_path, capsys):
    before = write_run(tmp_path / "before", ["A boat.", "Sea."], [0.25, 0.5], flagged=2)
    after = write_run(tmp_path / "after", ["A red boat at sea.", "Calm sea."], [0.75, 1.0], 1)
    out = tmp_path / "eval"
    args = ["eval", "--run", after, "--baseline", before, "--out", str(out)]
    assert main([*args, "--set", "semantic_diversity=false"]) == 0
    measures = json.loads((out / "metrics.json").read_text())["against_baseline"]["measures"]
    assert measures["critic_score_mean"] == {
        "baseline": pytest.approx(0.375),
        "run": pytest.approx(0.875),
        "change": pytest.approx(0.5),
    }
    assert measures["records_with_flags_share"]["change"] == pytest.approx(-0.5)
    assert measures["flag_share too_short (caption_detailed)"]["run"] == pytest.approx(0.5)
    assert measures["words_mean caption_detailed"]["baseline"] == pytest.approx(1.5)
    assert measures["words_mean caption_detailed"]["run"] == pytest.approx(3.5)
    printed = capsys.readouterr().out
    assert f"against baseline {before}" in printed and "0.3750 -> 0.8750 (+0.5)" in printed
    assert '<section id="baseline">' in (out / "report.html").read_text()


def test_a_baseline_that_is_not_a_run_is_refused_in_one_line(tmp_path, capsys):
    after = write_run(tmp_path / "after", ["A boat."], [0.5], flagged=0)
    (tmp_path / "empty").mkdir()
    args = ["eval", "--run", after, "--baseline", str(tmp_path / "empty")]
    assert main([*args, "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"factory eval: --baseline {tmp_path / 'empty'} holds no run.json and no output shards"
    )
