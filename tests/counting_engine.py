"""A real engine that counts its loads, and can kill its own process once: a drill.

Plugged in as `engine.kind: tests.counting_engine:CountingTransformers` (or
`CountingVllm`): it loads the real transformers (or vllm) engine for `engine.model` and
generates through it unchanged. `engine.revision` names the drill: each load appends the
process id to `<tmp>/factory-model-loads/<revision>.loads`; a revision ending in
`-die-once` makes the first process that has generated twice exit at once (the file
`<revision>.died` marks that it happened), as a replica lost to a node failure would.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from factory.models.engine import (
    ChatRequest,
    Completion,
    EngineConfig,
    GenerationParams,
    complete_all,
)
from factory.models.engine_loader import load_engine

LOADS_DIR = Path(tempfile.gettempdir()) / "factory-model-loads"


def loads(revision: str) -> list[int]:
    """Process ids of every load of the drill named `revision` so far."""
    path = LOADS_DIR / f"{revision}.loads"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def died(revision: str) -> bool:
    return (LOADS_DIR / f"{revision}.died").exists()


class _Counting:
    KIND = "transformers"

    def __init__(self, config: EngineConfig):
        self.drill = config.revision or "unnamed"
        real = config.model_copy(update={"kind": self.KIND, "revision": None})
        self.engine = load_engine(real)
        self.info = self.engine.info
        self.accepts_images = getattr(self.engine, "accepts_images", True)
        self.calls = 0
        LOADS_DIR.mkdir(exist_ok=True)
        with open(LOADS_DIR / f"{self.drill}.loads", "a") as log:
            log.write(f"{os.getpid()}\n")

    @property
    def generated_tokens(self) -> int:
        return getattr(self.engine, "generated_tokens", 0)

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams) -> list[str]:
        return [completion.text for completion in self.complete(requests, params)]

    def complete(
        self, requests: Sequence[ChatRequest], params: GenerationParams
    ) -> list[Completion]:
        self.calls += 1
        marker = LOADS_DIR / f"{self.drill}.died"
        if self.drill.endswith("-die-once") and self.calls == 2 and not marker.exists():
            marker.touch()
            os._exit(17)  # the replica's process is gone, requests in flight with it
        return complete_all(self.engine, requests, params)


class CountingTransformers(_Counting):
    KIND = "transformers"


class CountingVllm(_Counting):
    KIND = "vllm"
