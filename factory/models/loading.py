"""Load a Hugging Face processor + model pair from any weights source the factory knows.

One place for what every wrapper must do the same way: resolve local / s3:// / builtin://
weights, refuse pickles (safetensors only), run shipped code only when configured, put
the model on an explicit device in an explicit dtype, in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoConfig, AutoProcessor
from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

from factory.models.engine import ModelSource
from factory.models.weights import resolve_model_path

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Pretrained:
    directory: str
    device: torch.device
    processor: Any
    model: Any


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: float32 on CPU (bf16 matmuls are slow there), bfloat16 on accelerators."""
    if name == "auto":
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    return _DTYPES[name]


def load_pretrained(
    auto_model: Any, model: str, source: ModelSource, processor_class: Any = None
) -> Pretrained:
    """`auto_model` is a transformers Auto class (AutoModel, AutoModelForImageTextToText...).

    `processor_class` loads what turns inputs into tensors: AutoProcessor unless given (a
    text-only model passes AutoTokenizer).
    """
    directory = resolve_model_path(model, source.cache_dir)
    device = torch.device(source.device)
    remote_code = source.trust_remote_code
    # looked up at call time, not as a default argument, so tests can swap the module's name
    processor_class = processor_class or AutoProcessor
    processor = processor_class.from_pretrained(directory, trust_remote_code=remote_code)
    network = auto_model.from_pretrained(
        directory,
        dtype=resolve_dtype(source.dtype, device),
        use_safetensors=True,
        trust_remote_code=remote_code,
    )
    network.to(device).eval()
    return Pretrained(directory, device, processor, network)


def is_image_text_to_text(directory: str, source: ModelSource) -> bool:
    """Whether the model in `directory` takes images (else a text-only causal LM is assumed).

    Decided from its config alone, before any weights load: a model type transformers maps
    to AutoModelForImageTextToText, or shipped code that registers itself for that class.
    """
    config = AutoConfig.from_pretrained(directory, trust_remote_code=source.trust_remote_code)
    auto_map = getattr(config, "auto_map", None) or {}
    return (
        config.model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
        or "AutoModelForImageTextToText" in auto_map
    )
