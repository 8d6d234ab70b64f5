"""A scripted engine with the whole engine protocol, for the serving layer's own tests.

Plugged in as `engine.kind: tests.serve.streaming_engine:StreamingEngine`. It replies with
numbered words ("w1 w2 ..."), one stream chunk per word, and implements `complete`
(finish reasons, token counts), `stream` (closing it stops it) and a tokenizer whose
tokens are words, over a 256-token context. Prompt markers script it:
- `WORDS:<n>`: the reply has n words (default 5); cut at max_new_tokens (finish "length");
- `SLOW:<s>`: each word takes s seconds (timeouts, the wedge test);
- `RAISE`: the engine raises, as a request that breaks a real engine would;
- a request with a json_schema gets `{"ok": true}`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator, Sequence

from factory.models.engine import (
    ChatRequest,
    Completion,
    EngineConfig,
    EngineInfo,
    GenerationParams,
    StreamChunk,
)

_WORDS = re.compile(r"WORDS:(\d+)")
_SLOW = re.compile(r"SLOW:(\d+(?:\.\d+)?)")


class WordTokenizer:
    def encode(self, text: str, add_special_tokens: bool = False) -> list[str]:
        return text.split()


class StreamingEngine:
    max_context_tokens = 256

    def __init__(self, config: EngineConfig):
        self.info = EngineInfo(engine="streaming", model=config.model, revision="script-1")
        self.tokenizer = WordTokenizer()

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams) -> list[str]:
        return [completion.text for completion in self.complete(requests, params)]

    def complete(
        self, requests: Sequence[ChatRequest], params: GenerationParams
    ) -> list[Completion]:
        return [self._drain(request, params) for request in requests]

    def stream(self, request: ChatRequest, params: GenerationParams) -> Iterator[StreamChunk]:
        if "RAISE" in request.prompt:
            raise RuntimeError("the engine failed on this request")
        words, finish = _reply(request, params)
        slow = _SLOW.search(request.prompt)
        for index, word in enumerate(words):
            if slow:
                time.sleep(float(slow.group(1)))
            yield StreamChunk(word if index == 0 else f" {word}")
        prompt_tokens = len(request.prompt.split())
        completion = Completion(" ".join(words), finish, prompt_tokens, len(words))
        yield StreamChunk("", completion)

    def _drain(self, request: ChatRequest, params: GenerationParams) -> Completion:
        for chunk in self.stream(request, params):
            if chunk.completion is not None:
                return chunk.completion
        raise AssertionError("the stream ended without its completion")


def _reply(request: ChatRequest, params: GenerationParams) -> tuple[list[str], str]:
    if request.json_schema is not None:
        return ['{"ok":', "true}"], "stop"
    wanted = _WORDS.search(request.prompt)
    count = int(wanted.group(1)) if wanted else 5
    words = [f"w{i}" for i in range(1, count + 1)]
    if count > params.max_new_tokens:
        return words[: params.max_new_tokens], "length"
    return words, "stop"
