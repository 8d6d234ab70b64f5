"""DeepSpeed ZeRO through `factory train`: the JSON config, and two workers under ZeRO-2."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from factory.train.deepspeed_config import DeepSpeedConfig
from factory.train.distributed import even_shard
from tests.train.test_trainer import caption_run, train  # noqa: F401 (a fixture)

SHAPE = {"batch_size": 2, "grad_accum": 3, "max_grad_norm": 0.5, "world": 4}


@pytest.mark.parametrize("stage", [0, 2, 3])
def test_ds_config_carries_the_batch_shape_and_the_stage(stage):
    ds = DeepSpeedConfig(stage=stage).to_ds_config(**SHAPE)
    assert ds["train_micro_batch_size_per_gpu"] == 2
    assert ds["gradient_accumulation_steps"] == 3
    assert ds["train_batch_size"] == 2 * 3 * 4
    assert ds["gradient_clipping"] == 0.5
    assert ds["zero_optimization"] == {"stage": stage}
    assert ds["bf16"] == {"enabled": False}
    # the loop passes its own AdamW and schedule
    assert "optimizer" not in ds and "scheduler" not in ds


def test_ds_config_offloads_to_the_cpu():
    ds = DeepSpeedConfig(stage=3, offload_optimizer=True, offload_params=True, bf16=True)
    zero = ds.to_ds_config(**SHAPE)["zero_optimization"]
    assert zero["offload_optimizer"] == {"device": "cpu"}
    assert zero["offload_param"] == {"device": "cpu"}
    assert ds.to_ds_config(**SHAPE)["bf16"] == {"enabled": True}
    two = DeepSpeedConfig(stage=2, offload_optimizer=True).to_ds_config(**SHAPE)
    assert "offload_param" not in two["zero_optimization"]


@pytest.mark.parametrize(
    "options",
    [{"stage": 2, "offload_params": True}, {"stage": 0, "offload_optimizer": True}, {"stage": 4}],
)
def test_offload_the_stage_cannot_do_is_refused(options):
    with pytest.raises(ValidationError):
        DeepSpeedConfig(**options)


def test_even_shards_repeat_the_first_items():
    assert [even_shard(range(5), rank, 2) for rank in (0, 1)] == [[0, 2, 4], [1, 3, 0]]
    assert even_shard(range(1), 2, 3) == [0]
    assert even_shard([], 0, 2) == []


@pytest.mark.slow
def test_two_workers_train_the_tiny_model_with_zero2(tmp_path, caption_run, ray_local):  # noqa: F811
    # The cache starts empty: both workers need the builtin model, and only local rank 0
    # may build it (transformers writes weights on global rank 0 alone)
    out = tmp_path / "model"
    metrics = train(
        tmp_path,
        f"data.source={caption_run}",
        "optim.epochs=2",
        "scaling.num_workers=2",
        # Ray Train's controller needs a little CPU beside the workers on the 2-CPU Ray
        "scaling.cpus_per_worker=0.5",
        "deepspeed.stage=2",
    )
    epochs = metrics["epochs"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert "val_ROUGE-L" in epochs[-1]  # both ranks generated, rank 0 gathered and scored
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert (out / "model" / "adapter_config.json").exists()
    assert (out / "model" / "adapter_model.safetensors").exists()
    assert "stage: 2" in (out / "config.yaml").read_text()
    assert list((tmp_path / "cache" / "builtin" / "tiny-llava-v1").glob("*.safetensors"))
