"""Chat generation with any Hugging Face image-text-to-text or text-only chat model.

The model's own chat template formats each request (the processor's for image-text-to-text
models, the tokenizer's for text-only causal LMs), so one class serves LLaVA, Qwen-VL,
Idefics, Llama, Qwen and the tiny offline models alike; nothing here knows a model family.

Requests with a `json_schema` decode under a grammar (xgrammar, vLLM's own backend, as a
logits processor): the reply is JSON valid under the schema unless it was cut off at
max_new_tokens, which its finish reason says.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoTokenizer,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
)

from factory.models.engine import (
    ChatRequest,
    Completion,
    EngineConfig,
    EngineInfo,
    GenerationParams,
    StreamChunk,
    check_adapters,
)
from factory.models.images import decode_image
from factory.models.json_grammar import JsonGrammars, schema_key
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
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        vocab = self.model.get_output_embeddings().weight.shape[0]
        self._grammars = JsonGrammars(self.tokenizer, vocab, sorted(self.eos_ids))
        self.info = EngineInfo(
            engine="transformers",
            model=config.model,
            revision=config.revision or weights_revision(loaded.directory),
        )

    @property
    def constrains_json(self) -> bool:
        return JsonGrammars.available()

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams) -> list[str]:
        """One stripped completion per request, in request order."""
        return [completion.text for completion in self.complete(requests, params)]

    def complete(
        self,
        requests: Sequence[ChatRequest],
        params: GenerationParams,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Completion]:
        """Completions in request order. Requests are batched by JSON schema (one grammar
        per batch); `should_stop` is polled every step and ends the batch when true."""
        if not requests:
            return []
        self._check(requests)
        groups: dict[str, list[int]] = {}
        for position, request in enumerate(requests):
            groups.setdefault(schema_key(request.json_schema), []).append(position)
        completions: list[Completion] = [Completion("")] * len(requests)
        for positions in groups.values():
            batch = [requests[i] for i in positions]
            for position, completion in zip(
                positions, self._complete_batch(batch, params, should_stop), strict=True
            ):
                completions[position] = completion
        return completions

    def stream(self, request: ChatRequest, params: GenerationParams) -> Iterator[StreamChunk]:
        """The reply as it is generated; the last chunk carries the whole Completion.

        Generation runs in a thread; closing the iterator stops it at the next token.
        """
        self._check([request])
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        stop = threading.Event()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["completions"] = self._complete_batch(
                    [request], params, stop.is_set, streamer
                )
            except BaseException as error:  # re-raised in the caller's thread below
                outcome["error"] = error
                streamer.end()

        worker = threading.Thread(target=run, name="transformers-stream", daemon=True)
        worker.start()
        try:
            for text in streamer:
                if text:
                    yield StreamChunk(text)
        finally:
            stop.set()
            worker.join()
        if "error" in outcome:
            raise outcome["error"]
        yield StreamChunk("", completion=outcome["completions"][0])

    def _complete_batch(
        self,
        requests: Sequence[ChatRequest],
        params: GenerationParams,
        should_stop: Callable[[], bool] | None,
        streamer: Any = None,
    ) -> list[Completion]:
        inputs = self._encode([self._conversation(request) for request in requests])
        processors = LogitsProcessorList()
        if requests[0].json_schema is not None:
            processors.append(self._grammars.processor(requests[0].json_schema))
        stopping = StoppingCriteriaList([_Polled(should_stop)] if should_stop else [])
        with torch.inference_mode(), _seeded_if_sampling(params, self.device):
            output = self.model.generate(
                **inputs,
                **self._decoding_kwargs(params),
                logits_processor=processors,
                stopping_criteria=stopping,
                streamer=streamer,
            )
        # Left padding puts every prompt's end at the same column; what follows is new text.
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        completions = [
            self._completion(row, int(prompt))
            for row, prompt in zip(new_tokens, prompt_tokens, strict=True)
        ]
        self.generated_tokens += sum(c.completion_tokens or 0 for c in completions)
        return completions

    def _completion(self, tokens: list[int], prompt_tokens: int) -> Completion:
        """EOS ends a reply (counted as generated); a row without one ran out of tokens."""
        end = next((i for i, token in enumerate(tokens) if token in self.eos_ids), None)
        kept = tokens if end is None else tokens[:end]
        return Completion(
            text=self.tokenizer.decode(kept, skip_special_tokens=True).strip(),
            finish_reason="length" if end is None else "stop",
            prompt_tokens=prompt_tokens,
            completion_tokens=len(tokens) if end is None else end + 1,
        )

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


class _Polled(StoppingCriteria):
    """Ends generation for the whole batch once `should_stop()` says so."""

    def __init__(self, should_stop: Callable[[], bool]):
        self.should_stop = should_stop

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        done = bool(self.should_stop())
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """Every token that ends a reply: the generation config's (one or a list) and the
    tokenizer's."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return {int(i) for i in ids if i is not None}


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
