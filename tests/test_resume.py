"""A driver killed mid-run, then rerun: every accepted image exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from factory.io.outputs import read_output
from tests import imagegen

IMAGES = 240


def factory_command(source, output) -> list[str]:
    return [
        sys.executable, "-m", "factory.cli", "caption", "--input", str(source),
        "--output", str(output), "--set", "caption=null", "--set", "ocr=null",
        "--set", "output_options.rows_per_shard=8", "--set", "ray.rows_per_block=8",
    ]  # fmt: skip


def wait_for_shards(folder, at_least: int, process, timeout=120.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "run finished before it could be interrupted"
        shards = [n for n in os.listdir(folder) if n.startswith("part-")] if folder.exists() else []
        if len(shards) >= at_least:
            return len(shards)
        time.sleep(0.05)
    raise AssertionError("no shard was committed in time")


def test_killed_driver_then_rerun_writes_every_image_exactly_once(tmp_path):
    source, output = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for seed in range(IMAGES):
        (source / f"img{seed:04d}.jpg").write_bytes(imagegen.jpeg(320, 240, seed=seed))
    (source / "img0000_again.jpg").write_bytes((source / "img0000.jpg").read_bytes())

    first = subprocess.Popen(factory_command(source, output), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_shards(output / "captions", 2, first)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        written_before = read_output(str(output), "captions", ["uri"]).num_rows
        assert 0 < written_before < IMAGES
        assert not (output / "run.json").exists()
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # Ray's helpers the dead driver left behind

    rerun = subprocess.run(factory_command(source, output), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    run = json.loads((output / "run.json").read_text())
    # the whole output, though the killed run wrote part of it and left no run.json
    assert run["counts"] == {
        "inputs": IMAGES + 1,
        "accepted": IMAGES,
        "rejected": 0,
        "duplicates": 1,
        "skipped_existing": 0,
    }
    counts = run["this_run"]["counts"]  # this run's share, apart
    assert counts["inputs"] == IMAGES + 1
    assert counts["skipped_existing"] >= written_before
    assert (
        counts["accepted"] + counts["rejected"] + counts["duplicates"] + counts["skipped_existing"]
        == counts["inputs"]
    )
    assert [r["run_id"] for r in run["runs"]] == [run["run_id"]]
    report = (output / "report.html").read_text()
    assert f'<td>accepted</td><td class="num">{IMAGES}</td>' in report  # the whole output
    skipped = counts["skipped_existing"]
    assert f'<td>skipped_existing</td><td class="num">{skipped}</td>' in report  # this run

    captions = read_output(str(output), "captions", ["uri"]).column("uri").to_pylist()
    duplicates = read_output(str(output), "duplicates", ["uri", "duplicate_of"]).to_pylist()
    assert len(captions) == len(set(captions)) == IMAGES
    assert duplicates == [
        {"uri": str(source / "img0000_again.jpg"), "duplicate_of": str(source / "img0000.jpg")}
    ]
    assert read_output(str(output), "rejected") is None
    assert not [n for n in os.listdir(output / "captions") if n.startswith(".tmp")]


def test_a_run_that_adds_inputs_records_the_whole_output_and_its_own_share(tmp_path, ray_local):
    from factory.run_config import load_run_config
    from factory.runner import run_caption

    source, output = tmp_path / "in", tmp_path / "out"
    source.mkdir()
    for seed in range(4):
        (source / f"img{seed}.jpg").write_bytes(imagegen.jpeg(160, 120, seed=seed))
    overrides = [f"input={source}", f"output={output}", "caption=null", "ocr=null"]
    first = run_caption(load_run_config(None, overrides))
    (source / "broken.jpg").write_bytes(b"not an image")
    for seed in range(4, 6):
        (source / f"img{seed}.jpg").write_bytes(imagegen.jpeg(160, 120, seed=seed))
    second = run_caption(load_run_config(None, overrides))

    run = json.loads((output / "run.json").read_text())
    assert run["counts"] == {
        "inputs": 7,
        "accepted": 6,
        "rejected": 1,
        "duplicates": 0,
        "skipped_existing": 0,
    }
    assert sum(run["rejected_reasons"].values()) == 1  # the output's, not only this run's
    assert run["this_run"]["counts"] == {
        "inputs": 7,
        "accepted": 2,
        "rejected": 1,
        "duplicates": 0,
        "skipped_existing": 4,
    }
    assert [r["run_id"] for r in run["runs"]] == [first.run_id, second.run_id]
    assert run["runs"][0]["counts"]["accepted"] == 4
    report = (output / "report.html").read_text()
    assert first.run_id in report and second.run_id in report  # the runs, side by side
