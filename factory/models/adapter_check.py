"""Refuse, before a run starts, adapters that the engine they are named on cannot load.

Read from the adapter's own files (adapter_config.json, the weights' file names) without
importing an engine, so the driver can check the plan: a wrong adapter fails in one line
up front instead of in every replica after the model has loaded.
"""

from __future__ import annotations

import json
from pathlib import Path

from factory.models.engine import EngineConfig

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# vLLM's default max_lora_rank when the config leaves it unset
VLLM_DEFAULT_MAX_LORA_RANK = 16


def adapter_problem(engine: EngineConfig, directory: str) -> str | None:
    """Why `engine` cannot load the PEFT adapter in `directory`, or None if it can."""
    root = Path(directory)
    if not (root / ADAPTER_CONFIG).is_file():
        return f"no {ADAPTER_CONFIG} in {directory} (not a PEFT adapter folder)"
    if not (root / ADAPTER_WEIGHTS).is_file():
        # a pickled adapter_model.bin is never loaded
        return f"no {ADAPTER_WEIGHTS} in {directory}"
    config = json.loads((root / ADAPTER_CONFIG).read_text("utf-8"))
    if engine.kind != "vllm":
        return None
    if config.get("peft_type", "LORA") != "LORA":
        return f"vLLM loads LoRA adapters only, this one is {config.get('peft_type')}"
    saved = config.get("modules_to_save") or []
    if saved:
        return (
            f"it saves whole modules ({', '.join(saved)}), which vLLM cannot load into a "
            "generation model; use the transformers engine for it, or train without "
            "modules_to_save (for LLaVA: no train_projector)"
        )
    max_rank = engine.vllm.max_lora_rank or VLLM_DEFAULT_MAX_LORA_RANK
    if int(config.get("r", 0)) > max_rank:
        return (
            f"its rank {config['r']} is above vllm.max_lora_rank {max_rank}; raise "
            "max_lora_rank on the model"
        )
    return None
