"""Whether vLLM can load a PEFT adapter, decided from its files before any engine starts.

vLLM loads an adapter lazily, at the first request that names it; checking the config
first turns a late, per-request failure into a refusal when the plan is built.
"""

from __future__ import annotations

import json
from pathlib import Path

from vllm.config.lora import LoRAConfig
from vllm.lora.peft_helper import PEFTHelper

from factory.models.weights import resolve_model_path

_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "adapter_model.pt")


def check_adapter(path: str, max_lora_rank: int | None = None, cache_dir: str | None = None):
    """Raise ValueError naming the reason if vLLM cannot load the adapter at `path`.

    `path` is anything resolve_model_path takes (a folder, s3://...); `max_lora_rank` is
    the engine's setting, None for vLLM's default. Refused: what vLLM's own validation
    refuses (fully saved modules such as a LLaVA projector from `train_projector`, DoRA,
    bias, a rank above max_lora_rank, ...), and folders that are not PEFT LoRA adapters.
    """
    folder = Path(resolve_model_path(path, cache_dir))
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise ValueError(f"adapter {path!r}: no adapter_config.json, so not a PEFT adapter")
    config = json.loads(config_file.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ValueError(
            f"adapter {path!r} is a {config['peft_type']} adapter; vLLM loads only LoRA"
        )
    if not any((folder / name).is_file() for name in _WEIGHT_FILES):
        raise ValueError(f"adapter {path!r}: no weights file (one of {list(_WEIGHT_FILES)})")
    try:
        limits = LoRAConfig() if max_lora_rank is None else LoRAConfig(max_lora_rank=max_lora_rank)
        PEFTHelper.from_local_dir(str(folder), None).validate_legal(limits)
    except (ValueError, TypeError) as error:
        raise ValueError(f"vLLM cannot load adapter {path!r}: {error}") from error
