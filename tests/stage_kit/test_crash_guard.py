"""A record that kills its actor's process is rejected after bounded retries; the run ends."""

from __future__ import annotations

import json
import shutil

from PIL import Image

from factory.cli import main, samples_dir
from factory.io.outputs import read_output
from tests.drill_engines import CAPTION, POISON_SIZE

CRASHING = "tests.drill_engines:CrashingEngine"


def test_a_record_that_kills_the_actor_is_rejected_and_the_rest_captioned(tmp_path, ray_local):
    inputs = tmp_path / "in"
    shutil.copytree(samples_dir(), inputs)
    Image.new("RGB", POISON_SIZE, (250, 0, 0)).save(inputs / "poison.png")
    out = tmp_path / "out"
    overrides = [
        f"caption.engine.kind={CRASHING}",
        "caption.engine.model=drill",
        "caption.styles={detailed: caption_fusion}",
        "caption.resources.batch_size=4",
        "ocr=null",
        "health=null",
    ]
    args = ["caption", "--input", str(inputs), "--output", str(out)]
    assert main([*args, *(a for o in overrides for a in ("--set", o))]) == 0

    counts = json.loads((out / "run.json").read_text())["counts"]
    assert counts == {**counts, "inputs": 7, "accepted": 6, "rejected": 1}
    rejected = read_output(str(out), "rejected").to_pylist()
    assert [(r["stage"], r["reason"]) for r in rejected] == [("caption", "worker_crashed")]
    assert rejected[0]["uri"].endswith("poison.png")
    assert "died 2 times" in rejected[0]["detail"]
    captions = read_output(str(out), "captions").column("caption_detailed").to_pylist()
    assert captions == [CAPTION] * 6  # the poison's batch-mates were captioned, once each


def test_the_ledger_charges_only_attempts_that_never_finished():
    from factory.stage_kit.crash_guard import CrashLedger

    ledger = CrashLedger()
    assert ledger.begin("caption", ["a", "b"]) == [0, 0]
    ledger.finish("caption", ["a"])  # b's attempt died with its process
    assert ledger.begin("caption", ["a", "b"]) == [0, 1]
    assert ledger.begin("ocr", ["b"]) == [0]  # counted per stage
    ledger.restore("caption", ["b"], [1])  # b waits to run alone: not charged meanwhile
    assert ledger.begin("caption", ["b"]) == [1]
