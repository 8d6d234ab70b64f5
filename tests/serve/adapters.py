"""LoRA adapters for the tiny LLaVA, built with peft the way training saves them."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForImageTextToText


def make_lora_adapter(base_dir: str, out_dir: str, seed: int) -> str:
    """A LoRA on the text side's attention, with random (non-zero) B weights from `seed`.

    Freshly initialised LoRA has B = 0 and changes nothing; random B makes each adapter
    change the model's output, differently per seed.
    """
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_pretrained(base_dir)
    config = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=r".*language_model.*\.(q_proj|v_proj)",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 2.0)
    peft_model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir
