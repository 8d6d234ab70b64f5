"""Failure drills for training, injected as epoch-end hooks (TrainConfig.epoch_end_hooks)."""

from __future__ import annotations

import os

from factory.io import uris


def crash_once_after_first_epoch(config, epoch: int, rank: int) -> None:
    """The rank-0 worker dies like a lost node would, right after epoch 1's checkpoint, once
    per run (a marker beside the checkpoints remembers), so the run must resume from it."""
    if rank != 0 or epoch != 1:
        return
    marker = uris.join(config.checkpoint_storage(), config.name, "drill-crashed")
    if uris.size_of(marker) is not None:
        return
    uris.write_bytes_atomically(marker, b"crashed after epoch 1\n")
    os._exit(17)
