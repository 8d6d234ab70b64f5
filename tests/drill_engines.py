"""An engine whose process dies on one picture: the failure drill's poison record.

Plugged in as `engine.kind: tests.crashing_engine:CrashingEngine`. Any request whose image
is POISON_SIZE pixels kills the worker process outright (no exception to catch), as a
native decoder's segfault or an out-of-memory kill would.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

from PIL import Image

from factory.models.engine import ChatRequest, EngineConfig, EngineInfo, GenerationParams

POISON_SIZE = (97, 61)
CAPTION = "A picture with shapes and colours."


class CrashingEngine:
    def __init__(self, config: EngineConfig):
        self.info = EngineInfo(engine="crashing", model=config.model, revision="drill-1")

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams) -> list[str]:
        for request in requests:
            if request.image and Image.open(io.BytesIO(request.image)).size == POISON_SIZE:
                os._exit(3)
        return [CAPTION for _ in requests]
