"""PEFT adapters on the transformers engine: many LoRA adapters over one loaded base model.

The transformers engine itself refuses adapters; `engine_loader.load_engine` (for a
pipeline step) and the serving app compose it with this class instead of changing it.
Adapters load into the base model in place (transformers' PEFT integration), at most
`max_loaded` at once, the least recently used deleted first. A lock makes loading,
deleting and generating take turns: an adapter is never swapped while a batch is
generating with it.
"""

from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from factory.models.engine import (
    ChatRequest,
    Completion,
    EngineConfig,
    GenerationParams,
    StreamChunk,
)
from factory.models.transformers_engine import TransformersEngine
from factory.models.weights import resolve_model_path, weights_revision

ADAPTER_WEIGHTS = "adapter_model.safetensors"


class PeftAdapterEngine:
    """A TransformersEngine whose requests may name an adapter from `adapters`."""

    def __init__(self, config: EngineConfig, adapters: dict[str, str], max_loaded: int):
        self.base = TransformersEngine(config)
        self.info = self.base.info
        self.config, self.paths, self.max_loaded = config, dict(adapters), max_loaded
        self.loaded: OrderedDict[str, str] = OrderedDict()  # name -> revision, LRU first
        self.active: str | None = None
        self.lock = threading.Lock()

    def load(self, name: str) -> str:
        """Make sure adapter `name` is loaded; returns its revision."""
        with self.lock:
            return self._ensure(name)

    def unload(self, name: str) -> None:
        with self.lock:
            self._delete(name)

    def revision(self, name: str) -> str | None:
        return self.loaded.get(name)

    @property
    def accepts_images(self) -> bool:
        return self.base.accepts_images

    @property
    def constrains_json(self) -> bool:
        return bool(getattr(self.base, "constrains_json", False))

    @property
    def generated_tokens(self) -> int:
        return self.base.generated_tokens

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams) -> list[str]:
        return [completion.text for completion in self.complete(requests, params)]

    def complete(
        self,
        requests: Sequence[ChatRequest],
        params: GenerationParams,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Completion]:
        """Completions in request order; grouped by adapter, one engine call each.

        `should_stop` goes to the base engine's batches (a batch whose callers are all gone
        stops at the next token)."""
        completions: list[Completion | None] = [None] * len(requests)
        groups: dict[str | None, list[int]] = {}
        for position, request in enumerate(requests):
            groups.setdefault(request.adapter, []).append(position)
        stop = {"should_stop": should_stop} if should_stop is not None else {}
        with self.lock:
            for adapter, positions in groups.items():
                self._activate(adapter)
                # the adapter is applied to the model; the engine sees plain requests
                plain = [dataclasses.replace(requests[i], adapter=None) for i in positions]
                done = self.base.complete(plain, params, **stop)
                for position, completion in zip(positions, done, strict=True):
                    completions[position] = completion
        return [completion for completion in completions if completion is not None]

    def stream(self, request: ChatRequest, params: GenerationParams) -> Iterator[StreamChunk]:
        """The base engine's stream with the request's adapter active; the adapter stays
        in place (the lock held) until the stream ends or is closed."""
        with self.lock:
            self._activate(request.adapter)
            yield from self.base.stream(dataclasses.replace(request, adapter=None), params)

    def _activate(self, adapter: str | None) -> None:
        model = self.base.model
        if adapter is None:
            if self.active is not None:
                model.disable_adapters()
                self.active = None
            return
        self._ensure(adapter)
        if self.active is None:
            model.enable_adapters()
        model.set_adapter(adapter)
        self.active = adapter

    def _ensure(self, name: str) -> str:
        if name in self.loaded:
            self.loaded.move_to_end(name)
            return self.loaded[name]
        if name not in self.paths:
            raise ValueError(f"unknown adapter {name!r}; configured: {sorted(self.paths)}")
        directory = resolve_model_path(self.paths[name], self.config.cache_dir)
        if not (Path(directory) / ADAPTER_WEIGHTS).is_file():
            # transformers would fall back to a pickled adapter_model.bin: never unpickle
            raise ValueError(f"adapter {name!r} has no {ADAPTER_WEIGHTS} in {directory}")
        while len(self.loaded) >= self.max_loaded:
            self._delete(next(iter(self.loaded)))
        self.base.model.load_adapter(directory, adapter_name=name)
        if self.active is None:
            # loading activates the new adapter; base-model requests must stay unadapted
            self.base.model.disable_adapters()
        else:
            self.base.model.set_adapter(self.active)
        self.loaded[name] = weights_revision(directory)
        return self.loaded[name]

    def _delete(self, name: str) -> None:
        if name not in self.loaded:
            return
        if self.active == name:
            self.base.model.disable_adapters()
            self.active = None
        self.base.model.delete_adapter(name)
        del self.loaded[name]
