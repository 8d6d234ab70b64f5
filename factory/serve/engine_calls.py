"""Calling a synchronous engine from the model deployment: isolated, stoppable, streamed.

A synchronous engine (transformers, plugins) runs in a worker thread, one generation at a
time. A batch that raises is retried one request at a time, so only the request that
fails gets the error. A batch whose callers are all gone stops where the engine lets it:
through a `should_stop` callable its `complete` accepts, or, for a lone request, by
closing its `stream`; otherwise it runs out its (bounded) max_new_tokens.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from factory.models.engine import (
    ChatRequest,
    Completion,
    GenerationParams,
    complete_all,
)

Outcome = Completion | Exception
_END = object()


class Ticket:
    """A waiting request's side of a batch: `cancelled` once its caller is gone."""

    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False


class RequestCancelled(Exception):
    """The caller went away; the result would be thrown away."""


class SyncEngineCalls:
    def __init__(self, engine: Any):
        self.engine = engine
        # engines are not thread-safe: batches and streams take turns
        self.lock = threading.Lock()
        complete = getattr(engine, "complete", None)
        self.stoppable = complete is not None and _takes(complete, "should_stop")
        self.streams = callable(getattr(engine, "stream", None))

    def run_batch(
        self, requests: Sequence[ChatRequest], params: GenerationParams, tickets: list[Ticket]
    ) -> list[Outcome]:
        """One outcome per request, in order: a Completion, or the error of that request."""
        with self.lock:
            try:
                return list(self._complete(requests, params, tickets))
            except Exception as error:
                if len(requests) == 1:
                    return [error]
            # some request broke the batch: run each alone so only that one fails
            return [
                self._alone(request, params, ticket)
                for request, ticket in zip(requests, tickets, strict=True)
            ]

    def _alone(self, request: ChatRequest, params: GenerationParams, ticket: Ticket) -> Outcome:
        if ticket.cancelled:
            return RequestCancelled()
        try:
            return self._complete([request], params, [ticket])[0]
        except Exception as error:
            return error

    def _complete(
        self, requests: Sequence[ChatRequest], params: GenerationParams, tickets: list[Ticket]
    ) -> list[Completion]:
        def stop() -> bool:
            return all(ticket.cancelled for ticket in tickets)

        if self.stoppable:
            return list(self.engine.complete(requests, params, should_stop=stop))
        if len(requests) == 1 and self.streams:
            return [self._drained(requests[0], params, stop)]
        return complete_all(self.engine, requests, params)

    def _drained(
        self, request: ChatRequest, params: GenerationParams, stop: Callable[[], bool]
    ) -> Completion:
        chunks = self.engine.stream(request, params)
        try:
            for chunk in chunks:
                if chunk.completion is not None:
                    return chunk.completion
                if stop():
                    raise RequestCancelled()
        finally:
            chunks.close()  # stops the generation when it has not ended
        raise RuntimeError("the engine's stream ended without its completion")

    async def stream(self, request: ChatRequest, params: GenerationParams) -> AsyncIterator[Any]:
        """The engine's `stream`, pumped from a worker thread; closing it stops generation."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        ticket = Ticket()

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def pump() -> None:
            try:
                with self.lock:
                    if not ticket.cancelled:
                        self._pump(request, params, ticket, put)
            except Exception as error:
                put(error)
            finally:
                put(_END)

        loop.run_in_executor(None, pump)
        try:
            while (item := await queue.get()) is not _END:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            ticket.cancelled = True  # the thread stops at its next chunk

    def _pump(
        self,
        request: ChatRequest,
        params: GenerationParams,
        ticket: Ticket,
        put: Callable[[Any], None],
    ) -> None:
        chunks = self.engine.stream(request, params)
        try:
            for chunk in chunks:
                put(chunk)
                if ticket.cancelled:
                    return
        finally:
            chunks.close()


def _takes(function: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
