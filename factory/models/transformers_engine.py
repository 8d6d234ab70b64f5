"""Chat generation with any Hugging Face image-text-to-text model (CPU or GPU).

The processor's own chat template formats each request, so one class serves LLaVA, Qwen-VL,
Idefics and the tiny offline LLaVA alike; nothing here knows a model family.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText

from factory.io.images import fit_within, to_rgb
from factory.models.engine import ChatRequest, EngineConfig, EngineInfo, GenerationParams
from factory.models.loading import load_pretrained
from factory.models.weights import weights_revision


class TransformersEngine:
    """Loads the model once, then generates for batches of chat requests."""

    def __init__(self, config: EngineConfig):
        loaded = load_pretrained(AutoModelForImageTextToText, config.model, config)
        self.config = config
        self.device, self.processor, self.model = loaded.device, loaded.processor, loaded.model
        self.tokenizer = self.processor.tokenizer
        _prepare_for_batches(self.tokenizer)
        self.info = EngineInfo(
            engine="transformers",
            model=config.model,
            revision=config.revision or weights_revision(loaded.directory),
        )

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams) -> list[str]:
        """One stripped completion per request, in request order."""
        if not requests:
            return []
        conversations = [self._conversation(request) for request in requests]
        inputs = self.processor.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            processor_kwargs={"padding": True},
        ).to(device=self.device, dtype=self.model.dtype)
        with torch.inference_mode(), _seeded_if_sampling(params, self.device):
            output = self.model.generate(**inputs, **self._decoding_kwargs(params))
        # Left padding puts every prompt's end at the same column; what follows is new text.
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        texts = self.processor.batch_decode(new_tokens, skip_special_tokens=True)
        return [text.strip() for text in texts]

    def _conversation(self, request: ChatRequest) -> list[dict[str, Any]]:
        content: list[dict[str, Any]] = []
        if request.image is not None:
            image = decode_image(request.image, self.config.max_image_side)
            content.append({"type": "image", "image": image})
        content.append({"type": "text", "text": request.prompt})
        messages = [{"role": "user", "content": content}]
        if request.system:
            system = {"role": "system", "content": [{"type": "text", "text": request.system}]}
            messages.insert(0, system)
        return messages

    def _decoding_kwargs(self, params: GenerationParams) -> dict[str, Any]:
        common = {
            "max_new_tokens": params.max_new_tokens,
            "pad_token_id": self.tokenizer.pad_token_id,
        }
        if params.temperature == 0:
            return {**common, "do_sample": False}
        # top_k=0 turns off the top-k filter that many generation configs default to, so
        # sampling means temperature + top_p here as in the other engines.
        return {
            **common,
            "do_sample": True,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "top_k": 0,
        }


def decode_image(data: bytes, max_side: int) -> Image.Image:
    """Encoded bytes -> correct RGB that fits in max_side x max_side, aspect ratio kept."""
    image = Image.open(io.BytesIO(data))
    # For JPEG, decode at a reduced scale straight away: big museum scans decode much faster.
    image.draft("RGB", (max_side, max_side))
    return fit_within(to_rgb(image), max_side)


def _prepare_for_batches(tokenizer: Any) -> None:
    # Decoder-only generation continues from the last column, so prompts are padded on the
    # left; models shipped without a pad token pad with EOS, which attention masks out.
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


@contextlib.contextmanager
def _seeded_if_sampling(params: GenerationParams, device: torch.device) -> Iterator[None]:
    if params.temperature == 0:
        yield
        return
    # fork_rng restores the global RNG afterwards, so a seeded call leaves no trace.
    devices = [device] if device.type != "cpu" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.manual_seed(params.seed)
        yield
