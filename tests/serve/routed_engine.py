"""A scripted engine that answers each loop prompt as a well-behaved model would.

For tests about the HTTP layer and the critic loop's plumbing (plugged in as
`engine.kind: tests.serve.routed_engine:RoutedEngine`); the replies come from
tests/scripted_engine.py. `SLEEP:<seconds>` in a prompt makes the call take that long
(backpressure, timeouts, graceful shutdown); `ECHO` appends the adapter's name and
whether an image came.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from factory.models.engine import ChatRequest, EngineConfig, EngineInfo, GenerationParams
from tests.scripted_engine import REPLIES

_SLEEP = re.compile(r"SLEEP:(\d+(?:\.\d+)?)")
_ROUTES = (
    ("Split the caption below into atomic facts", "decomposer"),
    ("judge one statement", "critic"),
    ("Rewrite the caption", "rewriter"),
    ("answering a visitor's question", None),
)


class RoutedEngine:
    def __init__(self, config: EngineConfig):
        self.info = EngineInfo(engine="routed", model=config.model, revision="script-1")

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams) -> list[str]:
        return [self._reply(request) for request in requests]

    def _reply(self, request: ChatRequest) -> str:
        if sleep := _SLEEP.search(request.prompt):
            time.sleep(float(sleep.group(1)))
        for marker, role in _ROUTES:
            if marker in request.prompt:
                if role is None:
                    return "It is not visible in the picture."
                return REPLIES[role](request.prompt)
        reply = REPLIES["captioner"](request.prompt)
        if "ECHO" not in request.prompt:
            return reply
        image = "with image" if request.image else "no image"
        return f"{reply} [{request.adapter or 'base'}, {image}]"
