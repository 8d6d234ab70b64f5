"""TrainConfig: the dtype a worker loads the base weights in, and what a worker asks Ray for."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory.train.train_config import TrainConfig


def config(**fields) -> TrainConfig:
    return TrainConfig.model_validate({"data": {"kind": "caption", "source": "run/"}, **fields})


@pytest.mark.parametrize(
    ("fields", "device", "dtype"),
    [
        ({}, "cpu", "float32"),  # bf16 matmuls are slow on CPUs
        ({}, "cuda", "bfloat16"),  # a frozen base under a float32 adapter
        ({"method": {"method": "qlora"}}, "cuda", "bfloat16"),
        ({"method": {"method": "full"}}, "cuda", "float32"),  # AdamW needs float32 weights
        ({"deepspeed": {"stage": 2}}, "cuda", "float32"),
        ({"deepspeed": {"stage": 2, "bf16": True}}, "cuda", "bfloat16"),
        ({"model": {"dtype": "bfloat16"}}, "cpu", "bfloat16"),  # asked for, given
        ({"model": {"dtype": "float16"}, "method": {"method": "full"}}, "cuda", "float16"),
    ],
)
def test_auto_dtype_follows_device_method_and_deepspeed(fields, device, dtype):
    assert config(**fields).load_dtype(device) == dtype


def test_gpu_presets_ask_ray_train_for_a_training_node_per_worker():
    from factory.config_loading import load_config
    from factory.train.trainer import build_trainer

    preset = Path(__file__).parents[2] / "jobs" / "configs" / "train_peft_lora.yaml"
    trainer = build_trainer(load_config(preset, model=TrainConfig))
    asked = trainer.scaling_config._resources_per_worker_not_none
    assert asked == {"CPU": 8, "GPU": 1, "train_slot": 1}  # cluster.yaml: gpu_train only


def test_local_paths_reach_workers_absolute_and_uris_unchanged(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "base-model").mkdir()
    local = config(output="out", model={"model": "base-model", "cache_dir": "cache"})
    absolute = local.with_absolute_paths()
    assert absolute.output == str(tmp_path / "out")
    assert absolute.storage == str(tmp_path / "out" / "checkpoints")
    assert absolute.data.source == str(tmp_path / "run")
    assert absolute.model.model == str(tmp_path / "base-model")
    assert absolute.model.cache_dir == str(tmp_path / "cache")
    # a hub-style id that is not a local folder, and URIs, are left as they are
    remote = config(
        output="s3://bucket/models/v1", data={"kind": "caption", "source": "s3://bucket/run/"}
    ).model_copy(update={"model": config().model.model_copy(update={"model": "org/model"})})
    kept = remote.with_absolute_paths()
    assert kept.output == "s3://bucket/models/v1" and kept.data.source == "s3://bucket/run/"
    assert kept.storage == "s3://bucket/models/v1/checkpoints" and kept.model.model == "org/model"


def test_epoch_end_hooks_are_import_paths():
    hooks = ["tests.train_drills:crash_once_after_first_epoch"]
    assert config(epoch_end_hooks=hooks).epoch_end_hooks == hooks
    with pytest.raises(ValueError, match="not an import path: write 'package.module:attribute'"):
        config(epoch_end_hooks=["tests/train_drills.py"])
