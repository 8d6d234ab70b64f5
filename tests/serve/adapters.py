"""LoRA adapters for the tiny LLaVA (or tiny Llama), built with peft the way training saves
them."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

LLAVA_TEXT_ATTENTION = r".*language_model.*\.(q_proj|v_proj)"
LLAMA_ATTENTION = ["q_proj", "v_proj"]


def make_lora_adapter(base_dir: str, out_dir: str, seed: int, text_only: bool = False) -> str:
    """A LoRA on the text side's attention, with random (non-zero) B weights from `seed`.

    Freshly initialised LoRA has B = 0 and changes nothing; random B makes each adapter
    change the model's output, differently per seed.
    """
    torch.manual_seed(seed)
    auto = AutoModelForCausalLM if text_only else AutoModelForImageTextToText
    targets = LLAMA_ATTENTION if text_only else LLAVA_TEXT_ATTENTION
    model = auto.from_pretrained(base_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 2.0)
    peft_model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir
