"""DeepSpeed ZeRO for a training run: the typed options and the JSON config they make.

Light on purpose (pydantic only): TrainConfig imports it on the driver, where deepspeed
need not be installed. The loop builds its own AdamW and warm-up schedule and hands both
to `deepspeed.initialize`, so the DeepSpeed config carries no optimiser or scheduler
section: parameter groups (LLaVA's projector_lr) and the schedule stay the loop's.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DeepSpeedConfig(BaseModel):
    """ZeRO data parallelism: which training state each worker keeps only a shard of."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal[0, 1, 2, 3] = Field(
        ...,
        description="ZeRO stage: 0 plain data parallel; 1 shards optimiser states; 2 also "
        "gradients; 3 also the parameters (gathered per layer in forward/backward)",
    )
    offload_optimizer: bool = Field(
        False,
        description="keep optimiser states on the CPU and step them there with DeepSpeed's "
        "CPU Adam (compiled on first use); stage 1-3",
    )
    offload_params: bool = Field(
        False, description="keep the parameter shards in CPU memory between uses; stage 3 only"
    )
    bf16: bool = Field(
        False,
        description="train in bfloat16 with float32 master weights (DeepSpeed casts the model)",
    )

    @model_validator(mode="after")
    def _offload_fits_stage(self) -> DeepSpeedConfig:
        # Refuse what DeepSpeed would reject at initialize, on the driver and before Ray starts.
        if self.offload_params and self.stage != 3:
            raise ValueError(
                f"offload_params needs ZeRO stage 3 (stage {self.stage} keeps every parameter "
                "on each worker)"
            )
        if self.offload_optimizer and self.stage == 0:
            raise ValueError("offload_optimizer needs ZeRO stage 1, 2 or 3 (stage 0 has no shards)")
        return self

    def to_ds_config(
        self, *, batch_size: int, grad_accum: int, max_grad_norm: float, world: int
    ) -> dict[str, Any]:
        """The DeepSpeed JSON config for `world` workers with the loop's batch shape.

        DeepSpeed accumulates (it divides the loss by `grad_accum` in `backward`) and clips
        the gradient norm itself at each update.
        """
        zero: dict[str, Any] = {"stage": self.stage}
        if self.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu"}
        if self.offload_params:
            zero["offload_param"] = {"device": "cpu"}
        return {
            "train_micro_batch_size_per_gpu": batch_size,
            "gradient_accumulation_steps": grad_accum,
            # DeepSpeed checks micro x accumulation x world against this
            "train_batch_size": batch_size * grad_accum * world,
            "gradient_clipping": max_grad_norm,
            "zero_optimization": zero,
            "bf16": {"enabled": self.bf16},
            # the loop's metrics are the log; DeepSpeed's own would print every few steps
            "steps_per_print": 2**31 - 1,
            "wall_clock_breakdown": False,
        }
