"""The whole caption loop through `factory caption` on a real local Ray, then review.

Two runs of the loop on the shipped samples: one with the offline tiny models through the
transformers engine (random weights, but the structured steps decode under their JSON
schemas, so every sample gets through the whole loop), and one with scripted engines so
every column can be checked, followed by review export -> human edit -> import -> pairs.
"""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest
import yaml

from factory.cli import main, samples_dir
from factory.io.outputs import read_output
from tests.scripted_engine import CAPTION, FACTS, REWRITTEN

LOOP_STAGES = {"caption", "qa", "expand", "decompose", "critic", "rewrite", "health"}
SAMPLES = 6
VERDICTS = {"consistent", "inconsistent", "unverifiable"}


def caption(output, config, *extra, source: str | None = None) -> dict:
    source = source or samples_dir()
    args = ["caption", "--input", source, "--output", str(output), "--config", config]
    assert main([*args, "--set", "ocr=null", *extra]) == 0
    return json.loads((output / "run.json").read_text())


def test_demo_loop_runs_the_ultra_preset_through_the_whole_loop(tmp_path, ray_local):
    # `factory demo --loop` is jobs/configs/caption_ultra.yaml on the samples. Random
    # weights, but the structured steps decode under their schemas: nothing is rejected
    # for syntax, and every sample gets every column of the loop
    assert main(["demo", "--loop", "--output", str(tmp_path / "out"), "--set", "ocr=null"]) == 0
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["config"]["models"]["vlm"]["engine"]["model"] == "builtin://tiny-llava"
    counts = run["counts"]
    assert counts["inputs"] == SAMPLES == counts["accepted"] + counts["rejected"]
    assert set(run["stage_seconds"]) >= {"caption", "qa", "expand", "critic"}
    rejected = read_output(str(tmp_path / "out"), "rejected")
    assert rejected is None or rejected.num_rows == 0, rejected.to_pylist()
    rows = read_output(str(tmp_path / "out"), "captions").to_pylist()
    assert len(rows) == SAMPLES
    for row in rows:
        texts = [name for name in row if name.startswith("caption_") and "lineage" not in name]
        assert texts and all(row[f"{name}_lineage"]["prompt_sha256"] for name in texts)
        assert row["qa"] and row["expansion_questions"] and row["facts"]
        assert len(row["fact_checks"]) == len(row["facts"])
        assert all(c["verdict"] in VERDICTS for c in row["fact_checks"])
        assert 0.0 <= row["critic_score"] <= 1.0 and row["final_caption"]
        assert row["facts_lineage"]["prompt_template"] == "decompose.v2"


def scripted_config(path) -> str:
    def step(role: str, prompt: str) -> dict:
        return {"engine": {"kind": SCRIPTED, "model": role}, "prompt": prompt}

    small = {"num_cpus": 0.1}
    config = {
        "caption": {
            "engine": {"kind": SCRIPTED, "model": "captioner"},
            "styles": {"detailed": "caption_fusion", "objective": "caption_objective"},
            "resources": small,
        },
        "qa": {"step": step("qa", "qa"), "resources": small},
        "expand": {
            "questions": step("asker", "expand_questions"),
            "answer": step("answerer", "expand_answer"),
            "resources": small,
        },
        "decompose": {"step": step("decomposer", "decompose"), "resources": small},
        "critic": {"step": step("critic", "critic"), "resources": small},
        "rewrite": {"step": step("rewriter", "rewrite"), "resources": small},
    }
    path.write_text(yaml.safe_dump(config))
    return str(path)


SCRIPTED = "tests.scripted_engine:ScriptedEngine"


def test_loop_columns_then_review_export_edit_import(tmp_path, capsys, ray_local):
    out = tmp_path / "out"
    run = caption(out, scripted_config(tmp_path / "loop.yaml"))
    assert run["counts"]["accepted"] == SAMPLES
    rows = read_output(str(out), "captions").to_pylist()
    for row in rows:
        assert row["facts"] == list(FACTS) and row["critic_score"] == 0.5
        assert row["final_caption"] == REWRITTEN
        assert [p["category"] for p in row["qa"]] == ["subject", "creator"]
        assert row["caption_objective_lineage"]["prompt_template"] == "caption_objective.v2"
        assert row["run_id"] == run["run_id"]

    review = tmp_path / "review"
    assert main(["review", "export", "--run", str(out), "--to", str(review), "--n", "3"]) == 0
    items = [json.loads(line) for line in (review / "review.jsonl").read_text().splitlines()]
    assert len(items) == 3 and all(os.path.exists(review / item["image"]) for item in items)
    items[0]["corrected_caption"] = "A red horse stands on the left of a green field."
    items[1]["corrected_caption"] = "A red horse grazes in a green field under a blue sky."
    (review / "review.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    pairs_path = tmp_path / "pairs.parquet"
    assert main(["review", "import", "--review", str(review), "--out", str(pairs_path)]) == 0
    pairs = pq.read_table(pairs_path).to_pylist()
    assert [p["chosen"] for p in pairs] == [i["corrected_caption"] for i in items[:2]]
    assert all(p["rejected"] == items[0]["draft_caption"] for p in pairs)
    assert all(p["prompt_template"] == "expand_answer.v1" for p in pairs)
    # the exact prompt the draft answered: its first-pass caption and the questions
    assert all(CAPTION in p["prompt"] and "1. Where is the fence?" in p["prompt"] for p in pairs)


LOOP_SETTINGS = ("qa=null", "expand=null", "caption.styles={detailed: caption_fusion}")


def catalogue_manifest(path) -> str:
    """The samples as a manifest with a catalogue record (title, creator) each."""
    images = sorted(n for n in os.listdir(samples_dir()) if not n.endswith(".tsv"))
    lines = ["uri,title,creator"]
    lines += [f"{os.path.join(samples_dir(), n)},Work {i},Maker {i}" for i, n in enumerate(images)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def evaluated(run, out, *more: str) -> dict:
    args = ["eval", "--run", str(run), "--out", str(out), "--set", "semantic_diversity=false"]
    args += more
    assert main(args) == 0
    return json.loads((out / "metrics.json").read_text())


def test_the_flywheel_closes_from_the_cli(tmp_path, ray_local):
    """caption -> critic -> review export -> corrections -> import -> DPO -> adapter on the
    captioner -> recaption -> eval before and after, with the tiny models."""
    before = tmp_path / "before"
    settings = [arg for setting in LOOP_SETTINGS for arg in ("--set", setting)]
    manifest = catalogue_manifest(tmp_path / "manifest.csv")
    caption(before, "jobs/configs/caption_ultra.yaml", *settings, source=manifest)
    review = tmp_path / "review"
    assert main(["review", "export", "--run", str(before), "--to", str(review)]) == 0
    items = [json.loads(line) for line in (review / "review.jsonl").read_text().splitlines()]
    for n, item in enumerate(items):  # the corrections a person would write
        item["corrected_caption"] = f"A painting with a red boat on the left, number {n}."
    (review / "review.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    pairs = tmp_path / "pairs.parquet"
    assert main(["review", "import", "--review", str(review), "--out", str(pairs)]) == 0
    prompts = pq.read_table(pairs).column("prompt").to_pylist()
    # the exact prompts: the fusion template with this image's catalogue record
    assert len(prompts) == SAMPLES and all("Catalogue record" in p for p in prompts)
    assert sum("Work 3" in p for p in prompts) == 1

    adapter = tmp_path / "adapter"
    train = ["train", "--config", "jobs/configs/train_tiny_cpu.yaml"]
    for setting in (
        "data.kind=preference",
        f"data.source={pairs}",
        f"output={adapter}",
        f"storage={tmp_path / 'checkpoints'}",
        "optim.epochs=1",
        "validation.metrics=[]",
    ):
        train += ["--set", setting]
    assert main(train) == 0
    assert (adapter / "model" / "adapter_model.safetensors").is_file()

    after = tmp_path / "after"
    caption(
        after,
        "jobs/configs/caption_ultra.yaml",
        *settings,
        "--set",
        f"models.vlm.engine.adapters={{flywheel: {adapter / 'model'}}}",
        "--set",
        "caption.adapter=flywheel",
        source=manifest,
    )
    rows = read_output(str(after), "captions").to_pylist()
    lineage = rows[0]["caption_detailed_lineage"]
    assert lineage["adapter"] == "flywheel" and lineage["adapter_revision"]
    compared = tmp_path / "eval"
    metrics = evaluated(after, compared, "--baseline", str(before))
    assert metrics["against_baseline"]["baseline"] == str(before)
    measures = metrics["against_baseline"]["measures"]
    baseline = evaluated(before, tmp_path / "eval-before")
    # before and after side by side: critic score, health flags, caption length
    for name, before_value, after_value in (
        ("critic_score_mean", baseline["critic_score"]["mean"], metrics["critic_score"]["mean"]),
        (
            "words_mean final_caption",
            baseline["caption_words"]["final_caption"]["mean"],
            metrics["caption_words"]["final_caption"]["mean"],
        ),
        (
            "records_with_flags_share",
            baseline["records_with_flags"] / baseline["accepted_rows_read"],
            metrics["records_with_flags"] / metrics["accepted_rows_read"],
        ),
    ):
        assert measures[name]["baseline"] == pytest.approx(before_value), name
        assert measures[name]["run"] == pytest.approx(after_value), name
        assert measures[name]["change"] == pytest.approx(after_value - before_value), name
    report = (compared / "report.html").read_text()
    assert 'id="baseline"' in report
    for plot in ("critic score", "final_caption length"):
        assert f'alt="{plot}, baseline and this run"' in report
