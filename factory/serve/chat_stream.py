"""Server-sent events for `stream: true`, OpenAI's chat.completion.chunk protocol.

A role chunk, then a content delta per engine chunk as the model produces it, then the
finish reason; with `stream_options.include_usage` every chunk carries `usage: null` and
a last chunk with no choices carries the usage. Stop sequences are matched across chunk
boundaries: text that could be the start of one is held back until it is decided. An
error after the first chunk (the HTTP status is sent by then) ends the stream with an
error event in the JSON error shape, which the official client raises as APIError.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from factory.models.engine import Completion, StreamChunk
from factory.serve.api_errors import ApiError
from factory.serve.openai_chat import usage


class StopScanner:
    """Finds the first stop sequence in a text that arrives in pieces."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.keep = max((len(stop) for stop in stops), default=1) - 1
        self.held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """The text that is safe to send now, and whether a stop sequence was reached."""
        self.held += text
        found = [i for stop in self.stops if (i := self.held.find(stop)) >= 0]
        if found:
            out, self.held = self.held[: min(found)], ""
            return out, True
        cut = len(self.held) - self.keep
        if cut <= 0:
            return "", False
        out, self.held = self.held[:cut], self.held[cut:]
        return out, False

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out


class ChunkWriter:
    """Formats the events of one streamed reply."""

    def __init__(self, model: str, include_usage: bool):
        self.include_usage = include_usage
        self.base = {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._event([choice], None)

    def usage(self, completion: Completion | None) -> str:
        return self._event([], usage(completion))

    def _event(self, choices: list[dict[str, Any]], used: dict[str, int] | None) -> str:
        body: dict[str, Any] = {**self.base, "choices": choices}
        if self.include_usage:
            body["usage"] = used
        return f"data: {json.dumps(body)}\n\n"


async def sse_events(
    model: str, chunks: AsyncIterator[StreamChunk], stops: list[str], include_usage: bool
) -> AsyncIterator[str]:
    writer = ChunkWriter(model, include_usage)
    try:
        yield writer.delta({"role": "assistant", "content": ""})
        final = None
        async for event, completion in _content(writer, chunks, stops, include_usage):
            final = completion or final
            if event:
                yield event
        if include_usage:
            yield writer.usage(final)
        yield "data: [DONE]\n\n"
    except ApiError as error:
        yield f"data: {json.dumps(error.body())}\n\n"
    finally:
        await _close(chunks)


async def _content(
    writer: ChunkWriter,
    chunks: AsyncIterator[StreamChunk],
    stops: list[str],
    include_usage: bool,
) -> AsyncIterator[tuple[str | None, Completion | None]]:
    """(event or None, the completion once known) for each engine chunk, then the end."""
    scanner = StopScanner(stops)
    final: Completion | None = None
    stopped = False
    async for chunk in chunks:
        final = chunk.completion or final
        if stopped:
            yield None, final  # read on only for the usage
            continue
        text, stopped = scanner.feed(chunk.text)
        if text:
            yield writer.delta({"content": text}), final
        if stopped:
            yield writer.delta({}, "stop"), final
            if not include_usage:
                return  # closing the stream stops the generation
    if not stopped:
        rest = scanner.flush()
        if rest:
            yield writer.delta({"content": rest}), final
        yield writer.delta({}, final.finish_reason if final else "stop"), final


async def _close(chunks: AsyncIterator[StreamChunk]) -> None:
    close = getattr(chunks, "aclose", None)
    if close is not None:
        await close()
