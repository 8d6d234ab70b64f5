"""The training loop each Ray Train worker runs: one readable linear function.

Every worker loads the model and the examples, takes its shard of each epoch, and steps
AdamW with gradient accumulation and a warm-up schedule. After each epoch it measures
the validation loss and reports it with a checkpoint (written by rank 0): Ray Train keeps
the best by validation loss and hands the latest back after a worker failure or a
restart, and the loop resumes from its epoch, optimiser, schedule and reward shift.

With `config.deepspeed` set, a DeepSpeed ZeRO engine wraps the model instead of DDP and
steps the same optimiser and schedule (factory.train.distributed holds the specifics);
checkpoints keep the same layout, and a resume restarts the optimiser's moments.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any

import ray.train
import torch
from transformers import get_scheduler

from factory import plugins
from factory.io import uris
from factory.models.images import decode_image
from factory.train.collate import collate_preference, collate_sft
from factory.train.data import epoch_examples, load_examples
from factory.train.distributed import (
    adamw_class,
    backward_and_step,
    even_shard,
    full_weights,
    resolve_weights_leader_first,
    sum_over_workers,
)
from factory.train.distributed import initialize as deepspeed_initialize
from factory.train.energy import GpuEnergyMeter
from factory.train.generate import generate_text
from factory.train.losses import RewardShift, preference_loss, sequence_logps
from factory.train.methods import load_for_training, parameter_groups
from factory.train.train_config import TrainConfig
from factory.train.validation import validation_metrics

STATE_FILE = "trainer_state.pt"
# a Ray Train worker logs the root logger to the console once; a print there shows twice
log = logging.getLogger(__name__)
MODEL_DIR = "model"


def train_loop(config_json: dict[str, Any]) -> None:
    config = TrainConfig.model_validate(config_json)
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(config.optim.seed)
    device = ray.train.torch.get_device()

    resolve_weights_leader_first(
        config.model.model, config.model.cache_dir, context.get_local_rank(), device
    )
    trainable = load_for_training(
        config.model.model,
        config.model.family,
        config.model.task,
        config.method,
        dtype=config.load_dtype(device.type),
        device=str(device),
        cache_dir=config.model.cache_dir,
        # the DPO reference; plain SFT of a full model would only pay for a frozen copy
        with_reference=config.data.kind == "preference",
    )
    model = trainable.model.to(device)
    hooks = [plugins.load(path) for path in config.epoch_end_hooks]
    energy = GpuEnergyMeter(device)
    split = load_examples(config.data)
    optim = config.optim
    updates_per_epoch = math.ceil(
        len(epoch_examples(split.train, config.data, 0))
        / (optim.batch_size * world * optim.grad_accum)
    )
    total_updates = max(1, updates_per_epoch * optim.epochs)
    optimizer = adamw_class(config.deepspeed)(
        parameter_groups(model, optim.lr, optim.projector_lr),
        lr=optim.lr,
        weight_decay=optim.weight_decay,
    )
    scheduler = get_scheduler(
        optim.schedule,
        optimizer,
        num_warmup_steps=int(optim.warmup_ratio * total_updates),
        num_training_steps=total_updates,
    )
    shift = RewardShift(config.preference.delta_momentum)
    # DeepSpeed repartitions the optimiser's state, so a resume restarts its moments: only
    # weights, schedule and shift come back, loaded before the engine shards them.
    engine = None
    start_epoch, history = _resume(
        model, optimizer if config.deepspeed is None else None, scheduler, shift
    )
    if config.deepspeed is not None:
        model = engine = deepspeed_initialize(model, optimizer, scheduler, config, world, device)
    elif world > 1:
        model = ray.train.torch.prepare_model(model, move_to_device=False)

    for epoch in range(start_epoch, optim.epochs):
        model.train()
        started, seen, losses = time.perf_counter(), 0, []
        joules_at_start = energy.joules() if energy.available else 0.0
        examples = epoch_examples(split.train, config.data, epoch)
        # every rank runs as many steps: DDP's and ZeRO's collectives wait for all of them
        mine = even_shard(examples, rank, world)
        steps = math.ceil(len(mine) / optim.batch_size)
        for step, chunk in enumerate(_chunks(mine, optim.batch_size)):
            last = (step + 1) * optim.batch_size >= len(mine)
            update = (step + 1) % optim.grad_accum == 0 or last
            loss, logs = _loss(model, trainable, config, chunk, shift, device)
            if engine is not None:
                backward_and_step(engine, loss, update)  # accumulates, clips, steps, schedules
            else:
                (loss / optim.grad_accum).backward()
                if update:
                    torch.nn.utils.clip_grad_norm_(
                        [p for p in model.parameters() if p.requires_grad], optim.max_grad_norm
                    )
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
            seen += len(chunk)
            losses.append(loss.detach().item())
            if rank == 0 and ((step + 1) % config.log_every_steps == 0 or step + 1 == steps):
                rate = seen * world / (time.perf_counter() - started)
                log.info(
                    f"[{config.name}] epoch {epoch + 1}/{optim.epochs} step {step + 1}/{steps} "
                    f"loss {losses[-1]:.4f} {rate:.1f} samples/s"
                )
        seconds = time.perf_counter() - started
        epoch_joules = energy.joules() - joules_at_start if energy.available else 0.0
        metrics = {
            "epoch": epoch + 1,
            "train_loss": sum(losses) / max(1, len(losses)),
            "val_loss": _validation_loss(model, trainable, config, split.validation, shift, device),
            **_validation_metrics(
                model, engine, trainable, config, split.validation, device, rank, world
            ),
            "samples_per_s": seen * world / seconds if seconds else 0.0,
            "lr": scheduler.get_last_lr()[0],
            "trainable_parameters": trainable.trainable_parameters,
            "total_parameters": trainable.total_parameters,
            **_peak_memory(device),
            **_energy(epoch_joules, energy.available, seconds, device),
            **logs,
        }
        history.append(metrics)
        if rank == 0:
            log.info(
                f"[{config.name}] epoch {epoch + 1} done: train loss {metrics['train_loss']:.4f}"
                f", val loss {metrics['val_loss']:.4f}, {metrics['samples_per_s']:.1f} samples/s"
            )
        with full_weights(engine, trainable):  # every rank gathers under ZeRO-3
            _report(history, model, trainable, optimizer, scheduler, shift, rank, engine)
        for hook in hooks:
            hook(config, epoch + 1, rank)


def _energy(joules: float, measured: bool, seconds: float, device) -> dict[str, float]:
    """The epoch's GPU energy over every worker; nothing when no worker could measure it."""
    total, workers_measured = sum_over_workers([joules, float(measured)], device)
    if not workers_measured:
        return {}
    return {"gpu_energy_j": total, "gpu_mean_power_w": total / seconds if seconds else 0.0}


def _peak_memory(device) -> dict[str, float]:
    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        peak["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peak


def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _image(uri: str, max_side: int):
    return decode_image(uris.read_bytes(uri), max_side)


def _loss(model, trainable, config: TrainConfig, chunk, shift: RewardShift, device, learn=True):
    side, length = config.model.max_image_side, config.model.max_length
    if config.data.kind != "preference":
        rows = [(_image(e.image_uri, side), e.prompt, e.target) for e in chunk]
        batch = collate_sft(
            trainable.processor, config.model.family, rows, length, task=config.model.task
        )
        return model(**_to(batch, device)).loss, {}
    rows = [(_image(e.image_uri, side), e.prompt, e.chosen, e.rejected) for e in chunk]
    chosen, rejected = collate_preference(trainable.processor, config.model.family, rows, length)
    chosen, rejected = _to(chosen, device), _to(rejected, device)
    policy_c, tokens_c = _logps(model, chosen)
    policy_r, _ = _logps(model, rejected)
    with torch.no_grad(), trainable.reference() as reference:
        ref_c, _ = _logps(reference, chosen)
        ref_r, _ = _logps(reference, rejected)
    result = preference_loss(
        policy_c, policy_r, ref_c, ref_r, tokens_c, config.preference, shift, update_shift=learn
    )
    return result.total, result.metrics()


def _logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    # prompt tuning prepends virtual tokens to the policy's positions only: align the ends
    logits = model(**inputs).logits[:, -labels.shape[1] :]
    return sequence_logps(logits, labels)


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}


def _validation_loss(model, trainable, config, examples, shift, device) -> float:
    if not examples:
        return float("nan")
    model.eval()
    losses = []
    with torch.no_grad():
        for chunk in _chunks(examples, config.optim.batch_size):
            loss, _ = _loss(model, trainable, config, chunk, shift, device, learn=False)
            losses.append(loss.item() * len(chunk))
    model.train()
    return sum(losses) / len(examples)


def _validation_metrics(
    model, engine, trainable, config, examples, device, rank: int, world: int
) -> dict[str, float]:
    side, options = config.model.max_image_side, config.validation
    zero3 = engine is not None and engine.zero_optimization_stage() == 3

    def generate(image_uri: str, prompt: str) -> str:
        return generate_text(
            _unwrap(model),
            trainable.processor,
            config.model.family,
            config.model.task,
            _image(image_uri, side),
            prompt,
            options.max_new_tokens,
            device,
            synced_gpus=zero3,
        )

    model.eval()
    try:
        return validation_metrics(generate, options, examples, rank, world)
    finally:
        model.train()


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def _report(history, model, trainable, optimizer, scheduler, shift, rank: int, engine) -> None:
    """Every rank reports the epoch; rank 0 attaches the checkpoint and the whole history."""
    metrics = history[-1]
    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as folder:
        _unwrap(model).save_pretrained(os.path.join(folder, MODEL_DIR))
        trainable.processor.save_pretrained(os.path.join(folder, MODEL_DIR))
        torch.save(
            {
                "epoch": metrics["epoch"],
                # DeepSpeed's shards are per rank: not kept (a resume restarts the moments)
                "optimizer": optimizer.state_dict() if engine is None else None,
                "scheduler": scheduler.state_dict(),
                "shift": shift.state_dict(),
                "history": json.dumps(history),
                "trainable": _trainable_state(model),
            },
            os.path.join(folder, STATE_FILE),
        )
        with open(os.path.join(folder, "metrics.json"), "w") as handle:
            json.dump({**metrics, "history": history}, handle)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _trainable_state(model) -> dict[str, torch.Tensor]:
    """Only what training changes: small for adapters, and all a resume needs."""
    inner = _unwrap(model)
    names = {name for name, p in inner.named_parameters() if p.requires_grad}
    return {k: v for k, v in inner.state_dict().items() if k in names}


def _resume(model, optimizer, scheduler, shift: RewardShift) -> tuple[int, list[dict]]:
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return 0, []
    with checkpoint.as_directory() as folder:
        state = torch.load(os.path.join(folder, STATE_FILE), weights_only=True)
    model.load_state_dict(state["trainable"], strict=False)
    if optimizer is not None and state["optimizer"] is not None:
        optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    shift.load_state_dict(state["shift"])
    return int(state["epoch"]), json.loads(state["history"])
