"""`factory train` end to end: Ray Train fits the tiny preset on a caption run's output."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory.cli import main, samples_dir

CAPTIONS = [
    "A harvest field with workers cutting golden wheat under a pale sky.",
    "A great wave curls over three small boats with a mountain behind.",
    "Two fish and a prawn lie beside a short poem written in ink.",
    "A page of an old book shows constellations drawn as figures.",
    "Worn grey coins show a profile and letters around the rim.",
    "A quiet gallery room with a red vase on a wooden table.",
]


@pytest.fixture
def caption_run(tmp_path) -> str:
    """A caption run's output folder with real sample images and their captions."""
    images = sorted(n for n in os.listdir(samples_dir()) if not n.endswith(".tsv"))
    rows = {
        "uri": [os.path.join(samples_dir(), name) for name in images],
        "caption_detailed": CAPTIONS[: len(images)],
        "draft_style": ["detailed"] * len(images),
    }
    folder = tmp_path / "run" / "captions"
    folder.mkdir(parents=True)
    pq.write_table(pa.table(rows), folder / "part-0.parquet")
    return str(tmp_path / "run")


@pytest.mark.slow
def test_tiny_preset_trains_lora_and_publishes_the_adapter(tmp_path, caption_run, ray_local):
    out = tmp_path / "model"
    code = main(
        [
            "train",
            "--config",
            "jobs/configs/train_tiny_cpu.yaml",
            "--set",
            f"data.source={caption_run}",
            "--set",
            f"output={out}",
            "--set",
            f"storage={tmp_path / 'checkpoints'}",
            "--set",
            "model.cache_dir=" + str(tmp_path / "cache"),
        ]
    )
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    epochs = metrics["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert metrics["best_val_loss"] == min(e["val_loss"] for e in epochs)
    assert 0 < metrics["trainable_parameters"] < metrics["total_parameters"]
    assert metrics["samples_per_s"] > 0 and metrics["peak_rss_mb"] > 0
    assert (out / "model" / "adapter_config.json").exists()
    assert (out / "model" / "adapter_model.safetensors").exists()
    assert "lora" in (out / "config.yaml").read_text()
