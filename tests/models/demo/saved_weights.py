"""What the demo-model tests compare: a built model directory's saved tensors."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file


def weights(model_dir: str) -> dict[str, torch.Tensor]:
    return load_file(str(Path(model_dir) / "model.safetensors"))


def differing(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> list[str]:
    """The tensor names whose presence, dtype or values differ: [] for the same weights."""
    if left.keys() != right.keys():
        return sorted(left.keys() ^ right.keys())
    return [
        name
        for name, tensor in left.items()
        if tensor.dtype != right[name].dtype or not torch.equal(tensor, right[name])
    ]
