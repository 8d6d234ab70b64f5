"""Chat generation on vLLM's async engine (AsyncLLM), as Ray Data LLM and Ray Serve LLM run it.

One AsyncLLM per engine, on an event loop of its own in a background thread. Every request
goes in on its own and vLLM batches continuously across callers: `acomplete` and `astream`
for async callers (many in flight; cancelling the awaiting task aborts the request in
vLLM), and the synchronous `complete`/`generate`, which submit a whole batch at once and
wait for it. Each request carries its own adapter, sampling parameters and JSON schema, so
a bad one fails alone. The chat template is the model's, rendered by vLLM's own renderer as
`LLM.chat` does; an image goes in after the same decode and downscale as the transformers
engine's, so both engines see the same pixels.

vLLM starts its engine core and workers in spawned processes, which re-import the main
module: a script that builds this engine needs an `if __name__ == "__main__":` guard
(pytest's and Ray's entry points have one).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.exceptions import VLLMClientError, VLLMValidationError
from vllm.lora.request import LoRARequest
from vllm.platforms import current_platform
from vllm.renderers.params import ChatParams
from vllm.sampling_params import RequestOutputKind, SamplingParams
from vllm.v1.engine.async_llm import AsyncLLM
from vllm.v1.engine.exceptions import EngineGenerateError

from factory.models.engine import (
    ChatRequest,
    Completion,
    EngineConfig,
    EngineInfo,
    GenerationParams,
    StreamChunk,
    VllmOptions,
)
from factory.models.vllm_adapters import check_adapter
from factory.models.vllm_loop import EngineLoop, SchedulerLoad, SlotGate, no_gate
from factory.models.vllm_requests import (
    PromptTooLong,
    RequestsFailed,
    completion,
    conversation,
    sampling_params,
)
from factory.models.weights import resolve_model_path, weights_revision

__all__ = [
    "PromptTooLong",
    "RequestsFailed",
    "VllmEngine",
    "check_adapter",
    "engine_kwargs",
    "sampling_params",
]

# vllm engine arguments the factory derives from the config; `extra` may not repeat them.
_MANAGED_KWARGS = frozenset(
    {"model", "tokenizer", "dtype", "trust_remote_code"}
    | (set(VllmOptions.model_fields) - {"extra"})
)
_OPTIONAL_KWARGS = (
    "max_model_len",
    "gpu_memory_utilization",
    "limit_mm_per_prompt",
    "max_num_seqs",
)
_LORA_KWARGS = ("max_lora_rank", "max_loras")
# As LLM.chat renders: the template adds the generation prompt and BOS, the tokenizer not.
_CHAT = ChatParams(
    chat_template_kwargs={
        "add_generation_prompt": True,
        "continue_final_message": False,
        "tools": None,
        "tokenize": False,
    }
)
# Ray Data LLM's bound: a little more than the scheduler holds, so vLLM's own queue stays
# short and requests past it wait here, where cancelling them costs nothing.
_PENDING_PER_SEQ = 1.1
# what vLLM's validation names when a prompt exceeds max_model_len (tokens, or text so long
# that it cannot fit whatever it tokenizes to)
_PROMPT_LENGTH_PARAMETERS = frozenset({"input_tokens", "input_text"})


@dataclass(frozen=True)
class _Prepared:
    """A request checked and translated for vLLM, ready to submit."""

    messages: list[dict[str, Any]]
    sampling: SamplingParams
    lora: LoRARequest | None


class VllmEngine:
    """One AsyncLLM for the configured model; requests from any thread or loop share it."""

    constrains_json = True

    def __init__(self, config: EngineConfig):
        directory = resolve_model_path(config.model, config.cache_dir)
        self.config = config
        self.adapters = self._adapters(config)
        self.on_cpu = current_platform.is_cpu()
        self.load = SchedulerLoad()  # vLLM's running/waiting counts, step by step
        self._loop = EngineLoop(f"vllm-{config.model}")
        args = AsyncEngineArgs(
            **{"disable_log_stats": True, **engine_kwargs(config, directory, on_cpu=self.on_cpu)}
        )
        try:
            self.llm: AsyncLLM = self._loop.run(self._start(args))
        except BaseException:
            self._loop.close()
            raise
        self.accepts_images = self.llm.model_config.is_multimodal_model
        # for callers that budget prompts (Serve): the context and the model's tokenizer
        self.max_context_tokens: int = self.llm.model_config.max_model_len
        self.tokenizer = self.llm.tokenizer
        capacity = self.llm.vllm_config.scheduler_config.max_num_seqs
        self._pending = asyncio.Semaphore(math.ceil(capacity * _PENDING_PER_SEQ))
        self._gate = SlotGate().admit if self.on_cpu and self.adapters else no_gate
        self.generated_tokens = 0  # running total, read by the stage metrics
        self.info = EngineInfo(
            engine="vllm",
            model=config.model,
            revision=config.revision or weights_revision(directory),
        )

    @staticmethod
    def _adapters(config: EngineConfig) -> dict[str, LoRARequest]:
        # Checked now: vLLM itself would only fail at the first request naming the adapter.
        # Ids are positions in name order, so the same config always gives the same ids.
        adapters = {}
        for index, (name, path) in enumerate(sorted(config.adapters.items()), start=1):
            local = resolve_model_path(path, config.cache_dir)
            check_adapter(local, config.vllm.max_lora_rank)
            adapters[name] = LoRARequest(name, index, local)
        return adapters

    async def _start(self, args: AsyncEngineArgs) -> AsyncLLM:
        return AsyncLLM.from_engine_args(args, stat_loggers=[self.load.factory()])

    # --- synchronous batches (in-stage use) ---

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams) -> list[str]:
        """One stripped completion per request, in request order."""
        return [done.text for done in self.complete(requests, params)]

    def complete(
        self, requests: Sequence[ChatRequest], params: GenerationParams
    ) -> list[Completion]:
        """One Completion per request, in request order; all are in vLLM at once.

        A request that fails does not stop the others: once all are done, a batch of one
        raises its error, a larger batch raises RequestsFailed with the others' results.
        """
        if not requests:
            return []
        prepared = [self._try_prepare(request, params) for request in requests]
        outcomes = self._loop.run(self._gather(prepared))
        errors = {i: out for i, out in enumerate(outcomes) if isinstance(out, BaseException)}
        if not errors:
            return outcomes
        if len(requests) == 1:
            raise errors[0]
        kept = [None if i in errors else out for i, out in enumerate(outcomes)]
        raise RequestsFailed(kept, errors)

    def _try_prepare(
        self, request: ChatRequest, params: GenerationParams
    ) -> _Prepared | ValueError:
        try:
            return self._prepare(request, params)
        except ValueError as error:
            return error

    async def _gather(self, prepared: list[_Prepared | ValueError]) -> list[Any]:
        # Rendered together first, so the whole batch reaches vLLM's scheduler at once, as
        # LLM.chat's does: requests trickling in one by one as each is rendered start the
        # scheduler on partial batches (1.4x LLM.chat's time at batches of 32, measured).
        ready = [item for item in prepared if isinstance(item, _Prepared)]
        rendered = dict(zip(map(id, ready), await self._render_all(ready), strict=True))

        async def one(item: _Prepared | ValueError) -> Completion:
            if isinstance(item, ValueError):
                raise item
            return await self._complete(item, rendered[id(item)])

        return await asyncio.gather(*(one(item) for item in prepared), return_exceptions=True)

    async def _render_all(self, prepared: list[_Prepared]) -> list[Any]:
        """Engine inputs for all, in one call; all None (each rendered alone) if any fails,
        so that the one that fails fails alone."""
        try:
            return await self._render([item.messages for item in prepared])
        except VLLMClientError:
            return [None] * len(prepared)

    # --- async, one request each (services) ---

    async def acomplete(self, request: ChatRequest, params: GenerationParams) -> Completion:
        """The request's Completion; cancelling the awaiting task aborts it in vLLM."""
        if request.image is None:
            prepared = self._prepare(request, params)
        else:  # decoding a big scan would hold up the caller's loop
            prepared = await asyncio.to_thread(self._prepare, request, params)
        return await self._loop.call(self._complete(prepared))

    async def astream(
        self, request: ChatRequest, params: GenerationParams
    ) -> AsyncIterator[StreamChunk]:
        """The reply as vLLM produces it; the last chunk carries the whole Completion
        (text stripped). Closing the iterator aborts the request in vLLM."""
        prepared = self._prepare(request, params, RequestOutputKind.DELTA)
        # closed explicitly: an async generator left by `async for` closes only when collected
        async with aclosing(self._loop.relay(lambda: self._stream(prepared))) as chunks:
            async for chunk in chunks:
                yield chunk

    # --- on the engine loop ---

    async def _complete(self, prepared: _Prepared, rendered: Any = None) -> Completion:
        last = None
        async for output in self._outputs(prepared, rendered):
            last = output
        done = completion(last)
        self.generated_tokens += done.completion_tokens or 0
        return done

    async def _stream(self, prepared: _Prepared) -> AsyncIterator[StreamChunk]:
        text, tokens = "", 0
        async for output in self._outputs(prepared):
            delta = output.outputs[0]
            text, tokens = text + delta.text, tokens + len(delta.token_ids)
            if not output.finished:
                yield StreamChunk(delta.text)
                continue
            done = Completion(
                text=text.strip(),
                finish_reason="length" if delta.finish_reason == "length" else "stop",
                prompt_tokens=len(output.prompt_token_ids or ()),
                completion_tokens=tokens,
            )
            self.generated_tokens += tokens
            yield StreamChunk(delta.text, done)

    async def _outputs(self, prepared: _Prepared, rendered: Any = None) -> AsyncIterator[Any]:
        """vLLM's RequestOutputs for one request, its errors made clear; `rendered`: its
        engine input if already rendered.

        Leaving early (cancel, close) makes vLLM's generate abort the request.
        """
        try:
            # rendered before taking a slot, as Ray Data LLM prepares its rows: a freed slot
            # is refilled at once instead of after a render
            engine_input = rendered or (await self._render([prepared.messages]))[0]
            async with self._gate(prepared.lora is not None), self._pending:
                outputs = self.llm.generate(
                    engine_input,
                    prepared.sampling,
                    f"factory-{uuid.uuid4().hex}",
                    lora_request=prepared.lora,
                )
                async for output in outputs:
                    yield output
        except VLLMValidationError as error:
            if error.parameter in _PROMPT_LENGTH_PARAMETERS:
                raise PromptTooLong(f"vLLM refused the prompt: {error}") from error
            raise ValueError(f"vLLM refused the request: {error}") from error
        except VLLMClientError as error:
            raise ValueError(f"vLLM refused the request: {error}") from error
        except EngineGenerateError as error:
            raise RuntimeError(f"vLLM failed the request: {error.__cause__!r}") from error

    async def _render(self, conversations: list[list[dict[str, Any]]]) -> list[Any]:
        renderer = self.llm.renderer
        tokens = renderer.default_chat_tok_params.with_kwargs(add_special_tokens=False)
        _, engine_inputs = await renderer.render_chat_async(conversations, _CHAT, tokens)
        return engine_inputs

    # --- checks, on the caller's side ---

    def _prepare(
        self,
        request: ChatRequest,
        params: GenerationParams,
        output_kind: RequestOutputKind = RequestOutputKind.FINAL_ONLY,
    ) -> _Prepared:
        if request.adapter is not None and request.adapter not in self.adapters:
            raise ValueError(
                f"unknown adapter {request.adapter!r}; configured: {sorted(self.adapters)}"
            )
        if request.image is not None and not self.accepts_images:
            raise ValueError(
                f"model {self.config.model!r} is a text-only LLM and cannot take images; "
                "send text-only requests or configure an image-text-to-text model"
            )
        return _Prepared(
            conversation(request, self.config.max_image_side),
            sampling_params(params, request.json_schema, output_kind),
            self.adapters.get(request.adapter or ""),
        )

    def unfinished_requests(self) -> int:
        """Requests vLLM's front end still tracks (in the scheduler or on their way)."""
        return self.llm.get_num_unfinished_requests()

    def close(self) -> None:
        """Stop vLLM's engine processes and the loop now instead of at garbage collection."""
        if self._loop.loop.is_closed():
            return
        self._loop.run(self._shutdown())
        self._loop.close()

    async def _shutdown(self) -> None:
        self.llm.shutdown()
        # AsyncLLM.__del__ shuts down again; at interpreter exit that fails noisily
        del self.llm


def engine_kwargs(config: EngineConfig, directory: str, *, on_cpu: bool) -> dict[str, Any]:
    """vLLM engine arguments for `config`, the model's files being in `directory`."""
    options = config.vllm
    clashes = sorted(_MANAGED_KWARGS & set(options.extra))
    if clashes:
        raise ValueError(
            f"vllm.extra repeats arguments the factory sets from the config: {clashes}; "
            "set them through their own fields"
        )
    enable_lora = options.enable_lora or bool(config.adapters)
    kwargs: dict[str, Any] = {
        "model": directory,
        "dtype": _vllm_dtype(config.dtype, on_cpu),
        "trust_remote_code": config.trust_remote_code,
        "tensor_parallel_size": options.tensor_parallel_size,
        "enforce_eager": options.enforce_eager,
        "enable_lora": enable_lora,
    }
    for name in _OPTIONAL_KWARGS + (_LORA_KWARGS if enable_lora else ()):
        value = getattr(options, name)
        if value is not None:  # None: leave vLLM's own default in place
            kwargs[name] = value
    return {**kwargs, **options.extra}


def _vllm_dtype(name: str, on_cpu: bool) -> str:
    # The factory's "auto" (float32 on CPU, bfloat16 on accelerators), not vLLM's, which
    # follows the checkpoint's dtype; explicit names are vLLM's own spellings.
    if name == "auto":
        return "float32" if on_cpu else "bfloat16"
    return name
