"""The whole caption loop through `factory caption` on a real local Ray, then review.

Two runs of the loop on the shipped samples: one with the offline tiny models through the
transformers engine (random weights: every record must still be accounted for, rejected
with its stage and reason when a reply cannot be parsed), and one with scripted engines so
every column can be checked, followed by review export -> human edit -> import -> pairs.
"""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import yaml

from factory.cli import main, samples_dir
from factory.io.outputs import read_output
from tests.scripted_engine import FACTS, REWRITTEN

LOOP_STAGES = {"caption", "qa", "expand", "decompose", "critic", "rewrite", "health"}
SAMPLES = 6


def caption(output, config, *extra) -> dict:
    args = ["caption", "--input", samples_dir(), "--output", str(output), "--config", config]
    assert main([*args, "--set", "ocr=null", *extra]) == 0
    return json.loads((output / "run.json").read_text())


def test_ultra_preset_with_tiny_models_accounts_for_every_sample(tmp_path, ray_local):
    run = caption(tmp_path / "out", "jobs/configs/caption_ultra.yaml")
    counts = run["counts"]
    assert counts["inputs"] == SAMPLES == counts["accepted"] + counts["rejected"]
    assert set(run["stage_seconds"]) >= {"caption", "qa"}
    rejected = read_output(str(tmp_path / "out"), "rejected")
    for row in rejected.to_pylist() if rejected is not None else []:
        assert row["stage"] in LOOP_STAGES and row["reason"] and row["detail"]
    captions = read_output(str(tmp_path / "out"), "captions")
    for row in captions.to_pylist() if captions is not None else []:
        texts = [name for name in row if name.startswith("caption_") and "lineage" not in name]
        assert texts and all(row[f"{name}_lineage"]["prompt_sha256"] for name in texts)


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
