"""The model deployment: one engine per replica, dynamic batching, adapters on demand.

A plain class; `factory.serve.app` makes it a Serve deployment. Requests name an adapter
through Serve's multiplexed model id, so the router sends them to replicas that already
hold it; `serve.multiplexed` keeps at most `max_adapters_per_replica` per replica and
evicts the least recently used. Serve splits batches by that id, so one batch is one
adapter and one engine call.

Engines: transformers gets PEFT adapters through `PeftAdapterEngine`; vllm and openai
take the adapters in their own config (vLLM fetches every adapter when the replica starts
and keeps its own LoRA cache; an OpenAI-compatible server is sent the adapter name as the
model).
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from ray import serve

from factory.models.engine import ChatRequest, GenerationParams, load_engine
from factory.serve.config import ServeConfig
from factory.serve.errors import ApiError


@dataclasses.dataclass(frozen=True)
class Generated:
    """Texts for one call, and what made them (for lineage)."""

    texts: list[str]
    engine: str
    model: str
    revision: str
    adapter: str | None
    adapter_revision: str | None


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
        if unload is not None:
            unload(self.name)


def build_engine(config: ServeConfig) -> Any:
    if config.engine.kind == "transformers":
        from factory.serve.peft_adapters import PeftAdapterEngine

        return PeftAdapterEngine(
            config.engine, config.adapters, config.model_deployment.max_adapters_per_replica
        )
    return load_engine(config.engine.model_copy(update={"adapters": dict(config.adapters)}))


class ModelServer:
    """Generates for lists of chat requests; the adapter comes from the multiplexed id."""

    def __init__(self, config: ServeConfig):
        self.config = config
        self.engine = build_engine(config)
        # the engines say whether their model takes images; plugins that do not say, do
        base = getattr(self.engine, "base", self.engine)
        self.accepts_images = getattr(base, "accepts_images", True)
        options = config.model_deployment

        async def load_adapter(name: str) -> _AdapterSlot:
            load = getattr(self.engine, "load", None)
            revision = await asyncio.to_thread(load, name) if load else None
            return _AdapterSlot(self.engine, name, revision)

        async def generate_batch(items: list[tuple[ChatRequest, str]]) -> list[str]:
            return await self._generate_batch(items)

        # Applied per instance, from config: the limits are settings, not code.
        self._adapter = serve.multiplexed(
            max_num_models_per_replica=options.max_adapters_per_replica
        )(load_adapter)
        self._batched = serve.batch(
            max_batch_size=options.max_batch_size,
            batch_wait_timeout_s=options.batch_wait_timeout_s,
        )(generate_batch)

    async def generate(self, requests: list[ChatRequest], params: GenerationParams) -> Generated:
        if not self.accepts_images and any(request.image is not None for request in requests):
            raise ApiError(
                422,
                "model_takes_no_images",
                f"model {self.config.model_name!r} is a text-only LLM; send no image",
            )
        adapter = serve.get_multiplexed_model_id() or None
        revision = None
        if adapter is not None:
            slot = await self._adapter(adapter)
            revision = slot.revision
        requests = [dataclasses.replace(request, adapter=adapter) for request in requests]
        key = params.model_dump_json()
        texts = await asyncio.gather(*(self._batched((request, key)) for request in requests))
        info = self.engine.info
        return Generated(list(texts), info.engine, info.model, info.revision, adapter, revision)

    async def _generate_batch(self, items: list[tuple[ChatRequest, str]]) -> list[str]:
        # one engine call per distinct decoding setting in the batch
        texts: list[str] = [""] * len(items)
        by_params: dict[str, list[int]] = {}
        for position, (_, key) in enumerate(items):
            by_params.setdefault(key, []).append(position)
        for key, positions in by_params.items():
            params = GenerationParams.model_validate_json(key)
            requests = [items[position][0] for position in positions]
            outputs = await asyncio.to_thread(self.engine.generate, requests, params)
            for position, text in zip(positions, outputs, strict=True):
                texts[position] = text
        return texts

    async def ready(self) -> dict[str, str]:
        info = self.engine.info
        return {"engine": info.engine, "model": info.model, "revision": info.revision}

    async def check_health(self) -> None:
        """Serve's periodic health check: a replica whose engine is gone is replaced."""
        if self.engine is None:
            raise RuntimeError("engine not loaded")
