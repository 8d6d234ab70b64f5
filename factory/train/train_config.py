"""The typed config of a fine-tuning run: data, model, method, optimisation, Ray Train.

Light on purpose (no torch): `factory train` validates it on the driver before Ray starts.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from factory.io import uris
from factory.models.demo import DEMO_VLM
from factory.plugins import ImportPath
from factory.train.data import DataConfig
from factory.train.deepspeed_config import DeepSpeedConfig
from factory.train.losses import PreferenceLossConfig
from factory.train.methods import MethodConfig
from factory.train.validation import ValidationMetricsConfig


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(
        DEMO_VLM,
        description="base weights: local directory, s3://bucket/prefix, or builtin://tiny-llava"
        " / builtin://tiny-blip (random-weight, offline)",
    )
    family: Literal["llava", "blip"] = Field(
        "llava", description="llava: any LLaVA-style image-text-to-text model; blip: BLIP"
    )
    task: Literal["caption", "qa"] = Field("caption", description="what the model learns")
    max_length: int = Field(256, ge=16, description="tokens per example (prompt + target)")
    max_image_side: int = Field(448, ge=16, description="images are downscaled to this side")
    cache_dir: str | None = Field(None, description="cache for s3:// and builtin:// weights")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="the base weights' dtype while training. auto: bfloat16 on a GPU for "
        "adapter and prompt methods (their own weights stay float32), float32 otherwise: on "
        "the CPU, for full fine-tuning (AdamW on bfloat16 weights drops small updates) and "
        "under DeepSpeed, whose own bf16 flag keeps float32 master weights; QLoRA computes in it",
    )


class OptimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(1, ge=1)
    batch_size: int = Field(4, ge=1, description="examples per worker per step")
    grad_accum: int = Field(1, ge=1, description="steps whose gradients add up per update")
    lr: float = Field(2e-4, gt=0, description="AdamW learning rate")
    projector_lr: float | None = Field(
        None, description="separate learning rate for LLaVA's projector (None: lr)"
    )
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine")
    warmup_ratio: float = Field(0.03, ge=0, le=1, description="share of updates spent warming up")
    max_grad_norm: float = Field(1.0, gt=0)
    seed: int = Field(0)


class ScalingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_workers: int = Field(1, ge=1, description="Ray Train workers (data-parallel)")
    use_gpu: bool = Field(False, description="one GPU per worker (NCCL); CPU workers use gloo")
    cpus_per_worker: float = Field(1, gt=0)
    custom_resources_per_worker: dict[str, float] = Field(
        default_factory=dict,
        description="Ray custom resources per worker, e.g. {train_slot: 1} for cluster.yaml's "
        "gpu_train nodes",
    )


class CheckpointOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keep: int = Field(
        2,
        ge=1,
        description="checkpoints kept, best by validation loss; Ray Train keeps the latest "
        "as well (a resume starts from it)",
    )
    max_failures: int = Field(
        1,
        ge=0,
        description="failed attempts resumed from the latest checkpoint; an attempt that "
        "saved no new checkpoint is not retried (its error would repeat)",
    )


class TrainConfig(BaseModel):
    """`factory train --config jobs/configs/<preset>.yaml [--set key=value ...]`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("train", description="run name: the folder under storage")
    output: str | None = Field(
        None, description="where the final model/adapter, config and metrics go (local, s3://)"
    )
    storage: str | None = Field(
        None, description="Ray Train checkpoints (local, s3://); None: <output>/checkpoints"
    )
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    preference: PreferenceLossConfig = Field(
        default_factory=PreferenceLossConfig, description="DPO + SFT + BCO (preference data)"
    )
    validation: ValidationMetricsConfig = Field(
        default_factory=ValidationMetricsConfig,
        description="caption metrics on generated validation texts, beside the loss",
    )
    scaling: ScalingConfig = Field(default_factory=ScalingConfig)
    checkpoints: CheckpointOptions = Field(default_factory=CheckpointOptions)
    deepspeed: DeepSpeedConfig | None = Field(
        None,
        description="DeepSpeed ZeRO (stage 0-3, optional CPU offload) on every worker; "
        "null: plain PyTorch DDP",
    )
    log_every_steps: int = Field(
        10, ge=1, description="rank 0 prints loss and samples/s every this many steps"
    )
    epoch_end_hooks: list[ImportPath] = Field(
        [],
        description="functions named 'package.module:function', called on every worker as "
        "function(config, epoch, rank) after each epoch's checkpoint: metrics to a tracker "
        "of your own, or the tests' failure drill",
    )

    def checkpoint_storage(self) -> str:
        """Where Ray Train keeps this run's checkpoints (absolute when local)."""
        storage = self.storage or uris.join(self.output or ".", "checkpoints")
        if uris.is_local(storage):
            storage = os.path.abspath(os.path.expanduser(storage))
        return storage

    def with_absolute_paths(self) -> TrainConfig:
        """Local paths made absolute against this process's directory.

        Ray Train workers run in a directory of their own, so a relative `data.source` or
        model folder that the driver found would be missing in every worker.
        """

        def absolute(path: str | None) -> str | None:
            if path is None or not uris.is_local(path) or path.startswith("file://"):
                return path
            return os.path.abspath(os.path.expanduser(path))

        model_path = self.model.model
        if uris.is_local(model_path) and os.path.isdir(os.path.expanduser(model_path)):
            model_path = absolute(model_path)
        return self.model_copy(
            update={
                "output": absolute(self.output),
                "storage": self.checkpoint_storage(),
                "data": self.data.model_copy(update={"source": absolute(self.data.source)}),
                "model": self.model.model_copy(
                    update={"model": model_path, "cache_dir": absolute(self.model.cache_dir)}
                ),
            }
        )

    def load_dtype(self, device_type: str) -> str:
        """model.dtype with auto resolved for a worker's device type ("cpu", "cuda")."""
        if self.model.dtype != "auto":
            return self.model.dtype
        if self.deepspeed is not None:
            return "bfloat16" if self.deepspeed.bf16 else "float32"
        if device_type == "cpu" or self.method.method == "full":
            return "float32"
        return "bfloat16"

    @model_validator(mode="after")
    def _task_fits_data(self) -> TrainConfig:
        if self.data.kind == "qa" and self.model.task != "qa":
            raise ValueError("qa data trains model.task=qa; set model.task=qa")
        if (
            self.data.kind == "preference"
            and self.model.family == "blip"
            and self.model.task == "qa"
        ):
            raise ValueError(
                "preference training needs token logits, which BLIP's question-answering "
                "model does not return: train DPO on captions (model.task=caption)"
            )
        return self
