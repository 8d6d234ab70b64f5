"""Greedy generation from the model being trained, for validation caption metrics.

Each example is generated alone (batch of one): no padding side to get wrong across three
input layouts, and validation sets are capped small. The prompt is built exactly as the
collator builds the training prompt, so the model continues from where it learnt to.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image


@torch.no_grad()
def generate_text(
    model: Any,
    processor: Any,
    family: str,
    task: str,
    image: Image.Image,
    prompt: str,
    max_new_tokens: int,
    device: torch.device,
    synced_gpus: bool = False,
) -> str:
    """The model's greedy answer to (image, prompt); `synced_gpus` under ZeRO-3, where
    every rank must run as many forward passes as the longest generation."""
    options = {"max_new_tokens": max_new_tokens, "do_sample": False, "synced_gpus": synced_gpus}
    tokenizer = processor.tokenizer
    if family == "llava":
        user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
        text = processor.apply_chat_template([user], add_generation_prompt=True, tokenize=False)
        inputs = processor(text=text, images=image, add_special_tokens=False, return_tensors="pt")
        start = inputs["input_ids"].shape[1]
    elif task == "qa":  # BLIP: the question to the encoder; the decoder writes the answer
        inputs = processor(images=image, text=prompt, return_tensors="pt")
        start = 0
    else:  # BLIP captioning continues "[DEC] prompt", as trained
        inputs = processor(images=image, text=prompt or None, return_tensors="pt")
        prompt_words = tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt else []
        start = 1 + len(prompt_words)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    output = model.generate(**inputs, **options)
    return tokenizer.decode(output[0, start:], skip_special_tokens=True).strip()
