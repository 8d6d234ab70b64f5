"""Engines for the failure drills, for tests about the pipeline around the engine.

- `tests.drill_engines:CrashingEngine`: any request whose image is POISON_SIZE pixels kills
  the worker process outright (no exception to catch), as a native decoder's segfault or
  an out-of-memory kill would: the poison record.
- `tests.drill_engines:SlowEngine`: takes SLOW_SECONDS per request, so a run lasts long
  enough to lose a node in the middle of it.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Sequence

from PIL import Image

from factory.models.engine import ChatRequest, EngineConfig, EngineInfo, GenerationParams

POISON_SIZE = (97, 61)
SLOW_SECONDS = 0.05
CAPTION = "A picture with shapes and colours."


class CrashingEngine:
    def __init__(self, config: EngineConfig):
        self.info = EngineInfo(engine="crashing", model=config.model, revision="drill-1")

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams) -> list[str]:
        for request in requests:
            if request.image and Image.open(io.BytesIO(request.image)).size == POISON_SIZE:
                os._exit(3)
        return [CAPTION for _ in requests]


class SlowEngine:
    def __init__(self, config: EngineConfig):
        self.info = EngineInfo(engine="slow", model=config.model, revision="drill-1")

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams) -> list[str]:
        time.sleep(SLOW_SECONDS * len(requests))
        return [CAPTION for _ in requests]
