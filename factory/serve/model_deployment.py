"""The model deployment: one engine per replica, batching, adapters on demand, isolation.

A plain class; `factory.serve.app_builder` makes it a Serve deployment, and the pipeline's model
services deploy it too. Requests name an adapter through Serve's multiplexed model id, so
the router sends them to replicas that already hold it; `serve.multiplexed` keeps at most
`max_adapters_per_replica` per replica and evicts the least recently used.

Each request is checked against the model's context before it joins a batch. Async
engines (`acomplete`, vLLM's AsyncLLM) get every request as its own call: they batch
continuously, and cancelling the call aborts the request in the engine. Synchronous
engines are batched by Serve (one batch is one adapter) and run in a worker thread
(`engine_calls`): a request that raises fails alone, and a batch whose callers are gone
stops where the engine allows. `stream` gives the reply chunk by chunk.

Engines: transformers gets PEFT adapters through `PeftAdapterEngine`; vllm and openai
take the adapters in their own config (vLLM fetches every adapter when the replica starts
and keeps its own LoRA cache; an OpenAI-compatible server is sent the adapter name as the
model).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from factory.models.engine import (
    ChatRequest,
    Completion,
    GenerationParams,
    StreamChunk,
)
from factory.models.engine_loader import load_engine
from factory.serve.api_errors import ApiError, overloaded
from factory.serve.engine_calls import SyncEngineCalls, Ticket
from factory.serve.serve_config import ServeConfig
from factory.serve.token_budget import TokenBudget

BatchItem = tuple[ChatRequest, str, Ticket]
logger = logging.getLogger("ray.serve")


@dataclasses.dataclass(frozen=True)
class Generated:
    """Replies for one call, and what made them (for lineage).

    `completions` carries each reply's finish reason and token counts; `texts` are their
    texts, kept for callers that read only those.
    """

    texts: list[str]
    engine: str
    model: str
    revision: str
    adapter: str | None
    adapter_revision: str | None
    completions: list[Completion] = dataclasses.field(default_factory=list)


class _AdapterSlot:
    """What the multiplexer caches per adapter; deleting it unloads the adapter."""

    def __init__(self, engine: Any, name: str, revision: str | None):
        self.engine, self.name, self.revision = engine, name, revision
        self.released = False

    def __del__(self) -> None:
        # Serve calls this on LRU eviction, and Python calls it again at collection, maybe
        # after the adapter was loaded anew for a later request: only the first call
        # unloads. Engines with their own adapter cache (vllm, openai) have no unload.
        if self.released:
            return
        self.released = True
        unload = getattr(self.engine, "unload", None)
        if callable(unload):
            unload(self.name)


def build_engine(config: ServeConfig) -> Any:
    # PEFT only where adapters are served: the plain engine streams and stops mid-batch
    if config.engine.kind == "transformers" and config.adapters:
        from factory.models.peft_adapters import PeftAdapterEngine

        return PeftAdapterEngine(
            config.engine, config.adapters, config.model_deployment.max_adapters_per_replica
        )
    return load_engine(config.engine.model_copy(update={"adapters": dict(config.adapters)}))


class ModelServer:
    """Completes lists of chat requests; the adapter comes from the multiplexed id."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.engine = build_engine(config)
        # the engines say whether their model takes images; plugins that do not say, do
        base = getattr(self.engine, "base", self.engine)
        self.accepts_images = getattr(base, "accepts_images", True)
        self.budget = TokenBudget(self.engine, config.limits.max_prompt_tokens)
        self.is_async = callable(getattr(self.engine, "acomplete", None))
        self.calls = SyncEngineCalls(self.engine)
        self._in_flight = 0  # requests of this replica queued for or inside the engine
        options = config.model_deployment

        async def load_adapter(name: str) -> _AdapterSlot:
            # engines with their own adapter cache (vllm, openai) have no load method; an
            # attribute of that name that is not one (vLLM's scheduler `load`) is not it
            load = getattr(self.engine, "load", None)
            revision = await asyncio.to_thread(load, name) if callable(load) else None
            return _AdapterSlot(self.engine, name, revision)

        async def run_batch(items: list[BatchItem]) -> list[Completion | Exception]:
            return await self._run_batch(items)

        # Applied per instance, from config: the limits are settings, not code.
        self._adapter = serve.multiplexed(
            max_num_models_per_replica=options.max_adapters_per_replica
        )(load_adapter)
        self._batched = serve.batch(
            max_batch_size=options.max_batch_size,
            batch_wait_timeout_s=options.batch_wait_timeout_s,
        )(run_batch)

    async def generate(self, requests: list[ChatRequest], params: GenerationParams) -> Generated:
        """One completion per request, in order (the pipeline's and the ingress's call)."""
        requests, adapter, revision = await self._admitted(requests, params)
        completions = await asyncio.gather(
            *(self._complete(request, params) for request in requests)
        )
        return self._generated(list(completions), adapter, revision)

    async def generate_each(
        self, requests: list[ChatRequest], params: GenerationParams
    ) -> list[Generated | Exception]:
        """One outcome per request, in order: its reply, or the error that refused or failed
        that request alone (the ingress's call for requests it gathered from many clients).

        The requests arrive as a batch the ingress has already waited for, so they do not
        wait again here. Requests beyond the replica's `max_ongoing_requests` are refused
        with 503, as Serve refuses calls beyond it.
        """
        adapter, revision = await self._adapter_of_call()
        room = self.config.model_deployment.max_ongoing_requests - self._in_flight
        calls = [
            self._one(request, adapter, params, position < room)
            for position, request in enumerate(requests)
        ]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        return [
            _portable(outcome)
            if isinstance(outcome, BaseException)
            else self._generated([outcome], adapter, revision)
            for outcome in outcomes
        ]

    def _generated(
        self, completions: list[Completion], adapter: str | None, revision: str | None
    ) -> Generated:
        info = self.engine.info
        texts = [completion.text for completion in completions]
        return Generated(
            texts, info.engine, info.model, info.revision, adapter, revision, completions
        )

    async def _one(
        self, request: ChatRequest, adapter: str | None, params: GenerationParams, admitted: bool
    ) -> Completion:
        if not admitted:
            raise overloaded("the model replica is full", self.config.limits.retry_after_s)
        self._check([request], params)
        return await self._complete(dataclasses.replace(request, adapter=adapter), params, 0.0)

    async def stream(
        self, request: ChatRequest, params: GenerationParams
    ) -> AsyncIterator[StreamChunk]:
        """One reply as it is generated (call with `handle.options(stream=True)`); the last
        chunk carries the whole Completion. Closing the stream stops the generation."""
        [request], _, _ = await self._admitted([request], params)
        async for chunk in self._chunks(request, params):
            if chunk.completion is not None:
                chunk = StreamChunk(chunk.text, self.budget.with_counts(chunk.completion, request))
            yield chunk

    async def _admitted(
        self, requests: list[ChatRequest], params: GenerationParams
    ) -> tuple[list[ChatRequest], str | None, str | None]:
        """The requests with their adapter, once they pass the image and context checks."""
        self._check(requests, params)
        adapter, revision = await self._adapter_of_call()
        requests = [dataclasses.replace(request, adapter=adapter) for request in requests]
        return requests, adapter, revision

    def _check(self, requests: list[ChatRequest], params: GenerationParams) -> None:
        """Refuse images a text-only model cannot take, and prompts over its context."""
        if not self.accepts_images and any(request.image is not None for request in requests):
            raise ApiError(
                422,
                "model_takes_no_images",
                f"model {self.config.model_name!r} is a text-only LLM; send no image",
            )
        self.budget.check(requests, params)

    async def _adapter_of_call(self) -> tuple[str | None, str | None]:
        """The adapter the call names (Serve's multiplexed id), loaded, and its revision."""
        adapter = serve.get_multiplexed_model_id() or None
        if adapter is None:
            return None, None
        slot = await self._adapter(adapter)
        return adapter, slot.revision

    async def _complete(
        self, request: ChatRequest, params: GenerationParams, wait: float | None = None
    ) -> Completion:
        # A lone request on an idle replica starts at once; while others are in flight, a
        # batch waits (batch_wait_timeout_s) to fill. Serve reads the wait when a batch
        # takes its first request, so it is set before this one joins the queue.
        if wait is None:
            wait = self.config.model_deployment.batch_wait_timeout_s if self._in_flight else 0.0
        self._in_flight += 1
        try:
            if self.is_async:
                # the engine batches by itself; a cancelled call aborts the request in it
                completion = await self.engine.acomplete(request, params)
            else:
                completion = await self._batched_call(request, params, wait)
        finally:
            self._in_flight -= 1
        return self.budget.with_counts(completion, request)

    async def _batched_call(
        self, request: ChatRequest, params: GenerationParams, wait: float
    ) -> Completion:
        ticket = Ticket()
        self._batched.set_batch_wait_timeout_s(wait)
        try:
            outcome = await self._batched((request, params.model_dump_json(), ticket))
        except asyncio.CancelledError:
            ticket.cancelled = True  # the batch can stop once all its callers are gone
            raise
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def _run_batch(self, items: list[BatchItem]) -> list[Completion | Exception]:
        # one engine call per distinct decoding setting in the batch
        outcomes: list[Completion | Exception] = [RuntimeError("not run")] * len(items)
        by_params: dict[str, list[int]] = {}
        for position, (_, key, _) in enumerate(items):
            by_params.setdefault(key, []).append(position)
        for key, positions in by_params.items():
            params = GenerationParams.model_validate_json(key)
            requests = [items[position][0] for position in positions]
            tickets = [items[position][2] for position in positions]
            done = await asyncio.to_thread(self.calls.run_batch, requests, params, tickets)
            for position, outcome in zip(positions, done, strict=True):
                outcomes[position] = outcome
        return outcomes

    def _chunks(self, request: ChatRequest, params: GenerationParams) -> AsyncIterator[Any]:
        astream = getattr(self.engine, "astream", None)
        if callable(astream):
            return astream(request, params)
        if self.calls.streams and not self.is_async:
            return self.calls.stream(request, params)
        return self._one_chunk(request, params)

    async def _one_chunk(
        self, request: ChatRequest, params: GenerationParams
    ) -> AsyncIterator[StreamChunk]:
        completion = await self._complete(request, params)
        yield StreamChunk(completion.text, completion)

    async def ready(self) -> dict[str, Any]:
        info = self.engine.info
        return {
            "engine": info.engine,
            "model": info.model,
            "revision": info.revision,
            # what a pipeline's service client needs to know about the engine behind it
            "accepts_images": self.accepts_images,
            "constrains_json": bool(getattr(self.engine, "constrains_json", False)),
        }

    async def check_health(self) -> None:
        """Serve's periodic health check: a replica whose engine is gone is replaced."""
        if self.engine is None:
            raise RuntimeError("engine not loaded")


def _portable(error: BaseException) -> Exception:
    """A request's error as a value that crosses to the ingress: an ApiError as it is (the
    client's answer); anything else is a bug, logged here with its traceback and sent as
    its type and message (an engine's own exception class may not unpickle there)."""
    if isinstance(error, ApiError):
        return error
    logger.error("a request failed in the model replica", exc_info=error)
    return RuntimeError(f"{type(error).__name__}: {error}")
