"""Chat generation with any Hugging Face image-text-to-text or text-only chat model.

The model's own chat template formats each request (the processor's for image-text-to-text
models, the tokenizer's for text-only causal LMs), so one class serves LLaVA, Qwen-VL,
Idefics, Llama, Qwen and the tiny offline models alike; nothing here knows a model family.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

from factory.models.engine import (
    ChatRequest,
    EngineConfig,
    EngineInfo,
    GenerationParams,
    check_adapters,
)
from factory.models.images import decode_image
from factory.models.loading import is_image_text_to_text, load_pretrained
from factory.models.weights import resolve_model_path, weights_revision


class TransformersEngine:
    """Loads the model once, then generates for batches of chat requests."""

    def __init__(self, config: EngineConfig):
        directory = resolve_model_path(config.model, config.cache_dir)
        # The config decides which Auto classes fit: a text-only LLM has no processor and
        # no image-text-to-text head, and loading it as one would fail or drop weights.
        self.accepts_images = is_image_text_to_text(directory, config)
        if self.accepts_images:
            loaded = load_pretrained(AutoModelForImageTextToText, directory, config)
            self.tokenizer = loaded.processor.tokenizer
        else:
            loaded = load_pretrained(AutoModelForCausalLM, directory, config, AutoTokenizer)
            self.tokenizer = loaded.processor
        if not getattr(loaded.processor, "chat_template", None):
            raise ValueError(
                f"model {config.model!r} ships no chat template; the engine formats every "
                "request with the model's own template"
            )
        self.config = config
        self.device, self.processor, self.model = loaded.device, loaded.processor, loaded.model
        self.generated_tokens = 0  # running total, read by the stage metrics
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
        self._check(requests)
        conversations = [self._conversation(request) for request in requests]
        inputs = self._encode(conversations)
        with torch.inference_mode(), _seeded_if_sampling(params, self.device):
            output = self.model.generate(**inputs, **self._decoding_kwargs(params))
        # Left padding puts every prompt's end at the same column; what follows is new text.
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        self.generated_tokens += int((new_tokens != self.tokenizer.pad_token_id).sum())
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        return [text.strip() for text in texts]

    def _check(self, requests: Sequence[ChatRequest]) -> None:
        check_adapters(requests, self.config)
        if any(request.adapter is not None for request in requests):
            raise ValueError(
                "the transformers engine does not apply LoRA adapters (that needs peft); "
                "use kind vllm or openai, or merge the adapter into the weights"
            )
        if not self.accepts_images and any(request.image is not None for request in requests):
            raise ValueError(
                f"model {self.config.model!r} is a text-only LLM and cannot take images; "
                "send text-only requests or configure an image-text-to-text model"
            )

    def _encode(self, conversations: list[list[dict[str, Any]]]) -> Any:
        if self.accepts_images:
            inputs = self.processor.apply_chat_template(
                conversations,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
                processor_kwargs={"padding": True},
            )
            # dtype applies to pixel values only; token ids stay integers
            return inputs.to(device=self.device, dtype=self.model.dtype)
        inputs = self.tokenizer.apply_chat_template(
            conversations,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            padding=True,
        )
        return inputs.to(self.device)

    def _conversation(self, request: ChatRequest) -> list[dict[str, Any]]:
        if not self.accepts_images:
            # Text-only chat templates expect plain-string content.
            messages = [{"role": "user", "content": request.prompt}]
            if request.system:
                messages.insert(0, {"role": "system", "content": request.system})
            return messages
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
