"""TrainConfig -> a Ray Train TorchTrainer; fit it, then publish the best model.

What lands in `output`: `model/` (the adapter in PEFT format, or the full model, plus the
processor), `config.yaml` (the resolved config) and `metrics.json` (trainable parameters,
wall time, samples/s, peak memory, GPU energy where NVML reports it, the best epoch's
validation loss, every epoch's metrics).
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from factory.io import uris
from factory.train.preflight import check_data, check_resources, fixed_size_cluster
from factory.train.train_config import TrainConfig

log = logging.getLogger(__name__)


class TrainingFailed(ValueError):
    """A worker's own error, unwrapped from Ray Train's retries: one line for the CLI."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run; the message says where its checkpoints are."""


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
            # retried by _fit, and only after progress
            failure_config=ray.train.FailureConfig(max_failures=0),
        ),
    )


def run_training(config: TrainConfig) -> TrainResult:
    if not config.output:
        raise ValueError("a training run needs an output (--set output=DIR or s3://...)")
    config = config.with_absolute_paths()
    check_data(config)  # before Ray starts: a missing or too small source fails in a second
    import ray

    owns_ray = not ray.is_initialized()
    cluster = _fixed_cluster_resources()
    if cluster is not None:
        check_resources(config, cluster)
    started = time.perf_counter()
    result = _fit(config, owns_ray)
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


def _fit(config: TrainConfig, owns_ray: bool):
    """trainer.fit(), retried only after progress, ending early in one line either way.

    Ray Train's own retry (FailureConfig) reruns a worker error that happened before any
    checkpoint, which for a bad setting repeats the same traceback. Here a failed attempt is
    retried, resuming from the latest checkpoint, only when it saved a new one.
    """
    import ray
    from ray.train import TrainingFailedError

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main_thread else None
    failures, seen = 0, _checkpoints(config)
    try:
        while True:
            try:
                return build_trainer(config).fit()
            except TrainingFailedError as error:
                failures, saved = failures + 1, _checkpoints(config)
                if failures > config.checkpoints.max_failures or not saved - seen:
                    if owns_ray:  # stops forwarded worker tracebacks burying the one line
                        ray.shutdown()
                    raise TrainingFailed(_root_cause(error, failures)) from None
                seen = saved
                cause = _root_cause(error, failures)
                log.warning(f"{cause}; resuming from the latest checkpoint")
    except (KeyboardInterrupt, SystemExit, ray.exceptions.RayActorError):
        # Ray's SIGINT handler aborts the run by ending its controller actor, so fit()
        # sees that actor die (or the handler's own exit on a repeated Ctrl-C)
        raise TrainingInterrupted(
            f"interrupted; checkpoints so far are in {config.checkpoint_storage()}/"
            f"{config.name}, and the same command continues from the latest"
        ) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)  # Ray leaves its handler installed


def _checkpoints(config: TrainConfig) -> set[str]:
    """Names of the checkpoints this run's storage holds now."""
    from pyarrow import fs

    filesystem, path = uris.filesystem(uris.join(config.checkpoint_storage(), config.name))
    found = filesystem.get_file_info(fs.FileSelector(path, allow_not_found=True))
    return {
        info.base_name
        for info in found
        if info.type == fs.FileType.Directory and info.base_name.startswith("checkpoint_")
    }


def _root_cause(error, attempts: int) -> str:
    """The first failed rank's own exception, without Ray's wrappers and traceback."""
    failures = getattr(error, "worker_failures", None)
    if not failures:
        cause = getattr(error, "controller_failure", error)
        return f"the Ray Train controller failed: {type(cause).__name__}: {cause}"
    rank = min(failures)
    # Ray wraps a worker's exception with its traceback string; the traceback is in the log
    cause = getattr(failures[rank], "_base_exc", failures[rank])
    tries = f" (attempt {attempts})" if attempts > 1 else ""
    return f"worker rank {rank} failed{tries}: {type(cause).__name__}: {cause}"


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
