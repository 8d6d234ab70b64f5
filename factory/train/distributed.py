"""DeepSpeed inside a Ray Train worker: the few steps the training loop delegates.

Ray Train's TorchConfig has already set MASTER_ADDR/PORT, RANK, WORLD_SIZE and LOCAL_RANK
and initialised the torch process group (gloo on CPU, NCCL on GPU) before the loop runs;
DeepSpeed wraps that group rather than starting its own (no deepspeed launcher, no MPI).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

    from factory.train.deepspeed_config import DeepSpeedConfig
    from factory.train.train_config import TrainConfig

T = TypeVar("T")


def adamw_class(deepspeed: DeepSpeedConfig | None) -> type[torch.optim.Optimizer]:
    """torch's AdamW, or DeepSpeed's CPU Adam in AdamW mode when its states are offloaded
    (DeepSpeed refuses a torch optimiser there: stepping on the CPU is its point)."""
    if deepspeed is None or not deepspeed.offload_optimizer:
        import torch

        return torch.optim.AdamW
    from deepspeed.ops.adam import DeepSpeedCPUAdam

    return DeepSpeedCPUAdam  # adamw_mode=True by default: decoupled weight decay


def initialize(model, optimizer, scheduler, config: TrainConfig, world: int, device) -> Any:
    """The DeepSpeed engine around `model`, stepping `optimizer` and `scheduler`."""
    import deepspeed

    # A no-op wrap when Ray Train has set up the group, which it does for any world size.
    deepspeed.init_distributed(dist_backend="nccl" if device.type == "cuda" else "gloo")
    optim = config.optim
    engine, *_ = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=config.deepspeed.to_ds_config(
            batch_size=optim.batch_size,
            grad_accum=optim.grad_accum,
            max_grad_norm=optim.max_grad_norm,
            world=world,
        ),
    )
    return engine


def backward_and_step(engine, loss: torch.Tensor, update: bool) -> None:
    """One micro-batch: DeepSpeed scales by the accumulation steps and, when `update`,
    reduces the gradients, clips, steps the optimiser and the schedule, and zeroes.

    The loop decides the update (every grad_accum steps and at the end of an epoch's
    shard) instead of DeepSpeed's own step counter, which would drift across epochs whose
    step count is not a multiple of grad_accum."""
    engine.set_gradient_accumulation_boundary(update)
    engine.backward(loss)
    engine.step()


def resolve_weights_leader_first(uri: str, cache_dir: str | None, local_rank: int, device) -> None:
    """Fetch or build the base weights into the node's cache on local rank 0 while the other
    ranks wait. transformers 5 writes weights only on global rank 0 of a process group, so
    a builtin model built on any other rank would lack them; and one download per node is
    all the cache needs anyway."""
    import torch.distributed as dist

    from factory.models.weights import resolve_model_path

    if local_rank == 0:
        resolve_model_path(uri, cache_dir)
    if dist.is_initialized():
        # NCCL's barrier runs on a device; name it rather than let NCCL guess one
        dist.barrier(device_ids=[device.index] if device.type == "cuda" else None)


def sum_over_workers(values: list[float], device) -> list[float]:
    """Element-wise sums of every worker's `values` (the values themselves with one worker)."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_objects(value: T) -> list[T]:
    """Every worker's `value` (picklable), on every worker, in rank order."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [value]
    gathered: list[T] = [None] * dist.get_world_size()  # type: ignore[list-item]
    dist.all_gather_object(gathered, value)
    return gathered


def even_shard(items: Sequence[T], rank: int, world: int) -> Sequence[T]:
    """Rank `rank`'s share, with as many items on every rank: ZeRO's collectives in
    forward/backward hang if one rank runs a step fewer. Like torch's DistributedSampler,
    the first items repeat to fill the last round."""
    items = list(items)
    if not items:
        return items
    missing = -len(items) % world
    padded = items + (items * (missing // len(items) + 1))[:missing]
    return padded[rank::world]


@contextlib.contextmanager
def full_weights(engine, trainable) -> Iterator[None]:
    """While saving: under ZeRO-3 every rank gathers the weights the checkpoint holds
    (only the trainable ones for an adapter, all of them for full fine-tuning), so rank 0
    can write them whole. Every rank must enter; stages 0-2 keep full weights anyway."""
    if engine is None or engine.zero_optimization_stage() != 3:
        yield
        return
    import deepspeed

    module = engine.module
    adapter = trainable.method.method != "full"
    params = [p for p in module.parameters() if p.requires_grad or not adapter]
    # modifier_rank=None: read-only, the shards are released unchanged on exit
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
        yield
