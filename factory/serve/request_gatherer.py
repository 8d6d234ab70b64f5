"""Single requests from concurrent clients, gathered into one model call per adapter and decoding.

Why: every Serve handle call costs the model replica CPU of its own (the call's
deserialising, routing and event-loop turns), and on a CPU replica that competes with
generation for the GIL (benchmarks/RESULTS.md §11): batches then stay small however many
clients wait. A call that carries the whole batch pays that once, in the ingress's
process, and the replica gets its batch formed.

The ingress gathers under the model's batch size and wait. As on the model side, the
wait applies only while other requests of this ingress replica are in flight: a lone
request leaves on the event loop's next turn (with whatever arrived in the same turn).
Each batch becomes one `generate_each` call per adapter and decoding setting, and each
client gets its own outcome: one request's refusal or failure is its alone. A call is
cancelled once every client in it has gone (timed out or disconnected), so the model
stops on it.

Not `serve.batch`: it runs only inside a replica (it tags metrics with the replica's
context) and hands its batch function every caller at once with no way to learn that some
have gone; the gathering itself is a list and a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from factory.models.engine import ChatRequest, GenerationParams

HandleFor = Callable[[str | None], Any]  # adapter -> the model deployment's handle for it


class _Caller:
    """A waiting request: what it asks, where its outcome goes, the call it rides in."""

    __slots__ = ("adapter", "request", "params", "key", "outcome", "call")

    def __init__(self, adapter: str | None, request: ChatRequest, params: GenerationParams):
        self.adapter, self.request, self.params = adapter, request, params
        self.key = (adapter, params.model_dump_json())  # the call it may share
        self.outcome: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.call: _Call | None = None

    def leave(self) -> None:
        if self.call is not None:
            self.call.leave()


class _Call:
    """One model call's clients; the call is cancelled when the last of them leaves."""

    __slots__ = ("staying", "cancel")

    def __init__(self, callers: list[_Caller]):
        self.staying = len(callers)
        self.cancel: Callable[[], None] | None = None  # the response's, once sent
        for caller in callers:
            caller.call = self

    def leave(self) -> None:
        self.staying -= 1
        if self.staying == 0 and self.cancel is not None:
            self.cancel()  # every client has gone: the model stops on it


class RequestGatherer:
    """The ingress replica's gathering: `generate` one request, get its own outcome."""

    def __init__(self, handle_for: HandleFor, max_batch_size: int, wait_s: float):
        self.handle_for, self.max_batch_size, self.wait_s = handle_for, max_batch_size, wait_s
        self._waiting: list[_Caller] = []
        self._timer: asyncio.Handle | None = None
        self._in_flight = 0
        self._calls: set[asyncio.Task[None]] = set()  # held so they are not collected

    async def generate(
        self, adapter: str | None, request: ChatRequest, params: GenerationParams
    ) -> Any:
        """The model's `Generated` for this one request; raises its own error."""
        caller = _Caller(adapter, request, params)
        self._waiting.append(caller)
        self._in_flight += 1
        if len(self._waiting) >= self.max_batch_size:
            self._send()
        elif self._timer is None:
            loop = asyncio.get_running_loop()
            lone = self._in_flight == 1
            self._timer = (
                loop.call_soon(self._send) if lone else loop.call_later(self.wait_s, self._send)
            )
        try:
            outcome = await caller.outcome
        except asyncio.CancelledError:
            caller.leave()
            raise
        finally:
            self._in_flight -= 1
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _send(self) -> None:
        """One call per adapter and decoding setting for the clients still waiting."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiting, self._waiting = self._waiting, []
        calls: dict[tuple[str | None, str], list[_Caller]] = {}
        for caller in waiting:
            if not caller.outcome.done():  # a client gone before the call leaves none behind
                calls.setdefault(caller.key, []).append(caller)
        for callers in calls.values():
            task = asyncio.ensure_future(self._call(_Call(callers), callers))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _call(self, call: _Call, callers: list[_Caller]) -> None:
        if call.staying == 0:
            return  # all gone before the call left
        first = callers[0]
        requests = [caller.request for caller in callers]
        try:
            response = self.handle_for(first.adapter).generate_each.remote(requests, first.params)
            call.cancel = response.cancel
            outcomes = await response
        except Exception as error:  # the call itself failed (backpressure, replica lost)
            outcomes = [error] * len(callers)
        for caller, outcome in zip(callers, outcomes, strict=True):
            if not caller.outcome.done():
                caller.outcome.set_result(outcome)
