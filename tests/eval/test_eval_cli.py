"""`factory eval` with references: JSONL/Parquet in, table printed, metrics.json and
report.html out, for captions (with images) and for museum QA."""

from __future__ import annotations

import importlib.util
import json

import html5lib
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from factory.cli import main
from factory.eval.captioning import LIGHT_METRICS, score_captions
from tests.eval.browser import chromium_path, render
from tests.eval.caption_fixture import CAPTION_SETS
from tests.eval.test_vqa import CASES

LIGHT = ["--set", "tokenizer=ptb-python", "--set", f"metrics={list(LIGHT_METRICS)}"]
NO_EMBEDDER = ["--set", "semantic_diversity=false"]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_caption_metrics_from_jsonl_with_images(tmp_path, capsys):
    predictions = write_jsonl(
        tmp_path / "p.jsonl", [{"image_id": k, "caption": c} for k, (c, _) in CAPTION_SETS.items()]
    )
    # references one row per caption, as crowdsourcing exports them
    rows = [{"image_id": k, "caption": r} for k, (_, refs) in CAPTION_SETS.items() for r in refs]
    references = write_jsonl(tmp_path / "r.jsonl", rows)
    images = tmp_path / "images"
    images.mkdir()
    for name in ("img-01", "img-47"):
        Image.new("RGB", (40, 30), (200, 20, 20)).save(images / f"{name}.png")
    out = tmp_path / "out"
    args = ["eval", "--predictions", predictions, "--references", references]
    args += ["--images", str(images), "--out", str(out), *LIGHT, *NO_EMBEDDER]
    args += ["--set", "report.gallery_size=60", "--set", "clip_model=builtin://tiny-clip"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    expected = score_captions(
        {k: c for k, (c, _) in CAPTION_SETS.items()}, {k: r for k, (_, r) in CAPTION_SETS.items()}
    )
    assert {k: metrics["metrics"][k] for k in expected} == pytest.approx(expected)
    # CLIPScore for the two images found, RefCLIPScore against their references
    assert metrics["clip"]["images"] == 2
    assert 0.0 <= metrics["metrics"]["CLIPScore"] <= 2.5
    assert "RefCLIPScore" in metrics["per_image"]["img-01"]
    assert f"CIDEr-D       {expected['CIDEr-D']:.4f}" in printed
    assert metrics["pairs"] == {"scored": 52, "without_reference": 0, "without_prediction": 0}
    report = (out / "report.html").read_text()
    html5lib.HTMLParser(strict=True).parse(report)
    for section in ("summary", "metrics", "distributions", "diversity", "gallery"):
        assert f'<section id="{section}">' in report
    # gallery: lowest CIDEr-D first, so the unrelated img-47 comes before img-01
    assert report.count("data:image/jpeg;base64,") == 2
    assert report.index("<b>img-47</b>") < report.index("<b>img-01</b>")
    if chromium_path() and importlib.util.find_spec("playwright"):
        rendered = render(out / "report.html", chromium_path())
        assert rendered.problems == [] and rendered.broken_images == []
        assert rendered.section_ids == [
            "summary",
            "metrics",
            "distributions",
            "diversity",
            "gallery",
        ]


def test_museum_qa_from_parquet(tmp_path, capsys):
    references = pa.table(
        {
            "image_id": [c[0] for c in CASES],
            "category": [c[1] for c in CASES],
            "question": [c[2] for c in CASES],
            "answers": [c[3] for c in CASES],
        }
    )
    answered = [c for c in CASES if c[4] is not None]
    predictions = pa.table(
        {
            "image_id": [c[0] for c in answered],
            "question": [c[2] for c in answered],
            "answer": [c[4] for c in answered],
        }
    )
    pq.write_table(references, tmp_path / "r.parquet")
    pq.write_table(predictions, tmp_path / "p.parquet")
    out = tmp_path / "out"
    args = ["eval", "--predictions", str(tmp_path / "p.parquet")]
    args += ["--references", str(tmp_path / "r.parquet"), "--out", str(out), *NO_EMBEDDER]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["kind"] == "qa" and metrics["questions"] == 9
    assert metrics["complete_precision"] == pytest.approx(4 / 8)
    assert "complete_precision" in capsys.readouterr().out
    report = (out / "report.html").read_text()
    assert '<section id="per_category">' in report and "<td>material</td>" in report


def test_predictions_without_references_are_refused(tmp_path, capsys):
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"image_id": "a", "caption": "x"}])
    assert main(["eval", "--predictions", predictions]) == 2
    assert "--references" in capsys.readouterr().err
    references = write_jsonl(tmp_path / "r.jsonl", [{"id": "a", "caption": "x"}])
    assert main(["eval", "--predictions", predictions, "--references", references]) == 2
    assert "references have no 'image_id' column" in capsys.readouterr().err


def test_auto_tokenizer_falls_back_when_java_cannot_run(tmp_path, monkeypatch, capsys):
    broken = tmp_path / "bin"
    broken.mkdir()
    (broken / "java").write_text("#!/bin/sh\nexit 1\n")
    (broken / "java").chmod(0o755)
    monkeypatch.setenv("PATH", f"{broken}:{__import__('os').environ['PATH']}")
    predictions = write_jsonl(tmp_path / "p.jsonl", [{"image_id": "a", "caption": "A red horse."}])
    references = write_jsonl(tmp_path / "r.jsonl", [{"image_id": "a", "caption": "A red horse."}])
    out = tmp_path / "out"
    args = ["eval", "--predictions", predictions, "--references", references, "--out", str(out)]
    assert main([*args, *NO_EMBEDDER]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tokenizer"] == "ptb-python" and "METEOR" not in metrics["metrics"]
    assert metrics["metrics"]["BLEU-1"] == pytest.approx(1.0, abs=1e-6)
    assert "Java tokenizer failed" in capsys.readouterr().out
    with pytest.raises(RuntimeError, match=r"PTBTokenizer \(java\) failed"):
        main([*args, *NO_EMBEDDER, "--set", "tokenizer=ptb-java"])


def test_predictions_carrying_expert_tags_get_hallucination_scores(tmp_path):
    tag = [{"label": "horse", "score": 0.4}, {"label": "field", "score": 0.3}]
    predictions = pa.Table.from_pylist(
        [
            {"image_id": "a", "final_caption": "A horse and a dog in a field.", "tags": tag},
            {"image_id": "b", "final_caption": "A horse.", "tags": tag[:1]},
        ]
    )
    captions = tmp_path / "captions"
    captions.mkdir()
    pq.write_table(predictions, captions / "part-1.parquet")  # a folder of shards, as a run
    references = write_jsonl(
        tmp_path / "r.jsonl",
        [
            {"image_id": "a", "references": ["A horse in a field."]},
            {"image_id": "b", "references": ["A horse."]},
        ],
    )
    out = tmp_path / "out"
    args = ["eval", "--predictions", str(captions), "--references", references, "--out", str(out)]
    assert main([*args, "--prediction-column", "final_caption", *LIGHT, *NO_EMBEDDER]) == 0
    scores = json.loads((out / "metrics.json").read_text())["hallucination"]
    # a: horse, dog, field (dog unsupported); b: horse
    assert scores["chair_i"] == pytest.approx(1 / 4) and scores["chair_s"] == pytest.approx(1 / 2)
    assert scores["coverage"] == pytest.approx(3 / 3)
    assert '<section id="hallucination">' in (out / "report.html").read_text()


def test_eval_run_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["eval", "--run", str(tmp_path / "nothing-here")]) == 2
    assert "holds no run.json" in capsys.readouterr().err
    assert not (tmp_path / "nothing-here").exists()
