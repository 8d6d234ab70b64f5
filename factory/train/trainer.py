"""TrainConfig -> a Ray Train TorchTrainer; fit it, then publish the best model.

What lands in `output`: `model/` (the adapter in PEFT format, or the full model, plus the
processor), `config.yaml` (the resolved config) and `metrics.json` (trainable parameters,
wall time, samples/s, peak memory, GPU energy where NVML reports it, the best epoch's
validation loss, every epoch's metrics).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from factory.io import uris
from factory.train.config import TrainConfig
from factory.train.preflight import check_data, check_resources, fixed_size_cluster


@dataclass
class TrainResult:
    output: str
    best_val_loss: float
    epochs: list[dict[str, Any]] = field(default_factory=list)
    wall_seconds: float = 0.0


def build_trainer(config: TrainConfig):
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from factory.train.loop import train_loop

    storage = config.checkpoint_storage()
    scaling = config.scaling
    return TorchTrainer(
        train_loop,
        train_loop_config=config.model_dump(mode="json"),
        torch_config=TorchConfig(backend="nccl" if scaling.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker={
                "CPU": scaling.cpus_per_worker,
                **scaling.custom_resources_per_worker,
            },
        ),
        run_config=ray.train.RunConfig(
            name=config.name,
            storage_path=storage,
            checkpoint_config=ray.train.CheckpointConfig(
                num_to_keep=config.checkpoints.keep,
                checkpoint_score_attribute="val_loss",
                checkpoint_score_order="min",
            ),
            failure_config=ray.train.FailureConfig(max_failures=config.checkpoints.max_failures),
        ),
    )


def run_training(config: TrainConfig) -> TrainResult:
    if not config.output:
        raise ValueError("a training run needs an output (--set output=DIR or s3://...)")
    check_data(config)  # before Ray starts: a missing or too small source fails in a second
    cluster = _fixed_cluster_resources()
    if cluster is not None:
        check_resources(config, cluster)
    started = time.perf_counter()
    result = build_trainer(config).fit()
    checkpoint, best = _best(result)
    epochs = _history(result.checkpoint)
    summary = {
        **{k: v for k, v in best.items() if k != "history"},
        "best_val_loss": best.get("val_loss"),
        "wall_seconds": round(time.perf_counter() - started, 2),
        "epochs": epochs,
        **_energy_total(epochs),
    }
    with checkpoint.as_directory() as folder:
        _publish(folder, config, summary)
    return TrainResult(
        output=config.output,
        best_val_loss=best.get("val_loss", math.nan),
        epochs=epochs,
        wall_seconds=summary["wall_seconds"],
    )


def _fixed_cluster_resources() -> dict[str, float] | None:
    """What a local Ray has (it cannot grow); None for an autoscaling cluster."""
    if not fixed_size_cluster():
        return None
    import ray

    if not ray.is_initialized():
        ray.init()
    return ray.cluster_resources()


def _best(result) -> tuple[Any, dict[str, Any]]:
    """The kept checkpoint with the lowest validation loss, and its metrics."""
    scored = [
        (c, m) for c, m in result.best_checkpoints if not math.isnan(m.get("val_loss", math.nan))
    ]
    if scored:
        return min(scored, key=lambda pair: pair[1]["val_loss"])
    return result.checkpoint, dict(result.metrics or {})


def _energy_total(epochs: list[dict[str, Any]]) -> dict[str, float]:
    joules = [e["gpu_energy_j"] for e in epochs if "gpu_energy_j" in e]
    return {"gpu_energy_wh": sum(joules) / 3600} if joules else {}


def _history(latest) -> list[dict[str, Any]]:
    """Every epoch's metrics, from the latest checkpoint (Ray keeps only the best few)."""
    with latest.as_directory() as folder, open(os.path.join(folder, "metrics.json")) as handle:
        return json.load(handle)["history"]


def _publish(folder: str, config: TrainConfig, summary: dict[str, Any]) -> None:
    files = {
        "config.yaml": yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False).encode(),
        "metrics.json": json.dumps(summary, indent=2, default=str).encode(),
    }
    model_dir = os.path.join(folder, "model")
    for root, _dirs, names in os.walk(model_dir):
        for name in names:
            local = os.path.join(root, name)
            with open(local, "rb") as handle:
                files[os.path.join("model", os.path.relpath(local, model_dir))] = handle.read()
    for relative, data in files.items():
        uris.write_bytes_atomically(uris.join(config.output, relative), data)
