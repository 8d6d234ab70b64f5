"""Records that kill their worker process are rejected instead of retried forever.

An exception in a record is the stage's business (base.map_batch rejects the row). A
record that takes the whole process down (a native decoder's segfault, an out-of-memory
kill) is not: Ray Data restarts the actor and retries the batch without limit, so one
such record would stall the run. Each guarded batch therefore registers its rows in a
per-run ledger before it runs and clears them after. Rows an earlier attempt never
cleared are suspects: they run alone, one at a time, so the next death names the record;
a row whose process died `max_record_crashes` times is marked rejected ("worker_crashed")
and passed through without being run again.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from factory import records

LEDGER_PREFIX = "factory-crash-ledger-"
LEDGER_PATIENCE_SECONDS = 120
REASON = "worker_crashed"


class CrashLedger:
    """A Ray actor: per-run counts of attempts that never finished, by stage and row uri."""

    def __init__(self) -> None:
        self.unfinished: dict[tuple[str, str], int] = {}

    def begin(self, stage: str, uris: list[str]) -> list[int]:
        """Registers an attempt at each row; returns how many earlier attempts died."""
        earlier = [self.unfinished.get((stage, uri), 0) for uri in uris]
        for uri, count in zip(uris, earlier, strict=True):
            self.unfinished[(stage, uri)] = count + 1
        return earlier

    def restore(self, stage: str, uris: list[str], counts: list[int]) -> None:
        """Takes back an attempt that will not run these rows together after all."""
        for uri, count in zip(uris, counts, strict=True):
            self.unfinished[(stage, uri)] = count

    def finish(self, stage: str, uris: list[str]) -> None:
        for uri in uris:
            self.unfinished.pop((stage, uri), None)


def start_ledger(run_id: str) -> Any:
    """The run's ledger, on the driver's node (it lives as long as the driver)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    strategy = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return (
        ray.remote(CrashLedger)
        .options(
            name=LEDGER_PREFIX + run_id,
            get_if_exists=True,
            num_cpus=0,
            scheduling_strategy=strategy,
            # restarted elsewhere if its node goes (empty: suspects are then found again)
            max_restarts=-1,
            max_task_retries=-1,
        )
        .remote()
    )


class CrashGuardedStage:
    """An actor stage behind the ledger: same input and output as the stage itself."""

    def __init__(
        self, stage: type, stage_kwargs: dict[str, Any], name: str, run_id: str, max_crashes: int
    ):
        import ray

        try:
            self.ledger = ray.get_actor(LEDGER_PREFIX + run_id)
        except ValueError as missing:
            raise RuntimeError(
                f"no crash ledger for run {run_id!r}: the driver starts one with "
                "start_ledger(run_id) and holds it while the pipeline runs"
            ) from missing
        self.stage = stage(**stage_kwargs)
        self.name, self.max_crashes = name, max_crashes

    def __call__(self, batch: pa.Table) -> pa.Table:
        uris = batch.column("uri").to_pylist()
        earlier = self._ask("begin", uris)
        if not any(earlier):
            out = self.stage(batch)
            self.ledger.finish.remote(self.name, uris)
            return out
        crashed = [n >= self.max_crashes for n in earlier]
        batch = _reject(batch, crashed, self.name, self.max_crashes)
        suspects = [i for i, n in enumerate(earlier) if 0 < n < self.max_crashes]
        rest = sorted(set(range(batch.num_rows)) - set(suspects))
        # a suspect is charged only for a death while it runs alone
        waiting = [uris[i] for i in suspects]
        self._ask("restore", waiting, [earlier[i] for i in suspects])
        parts = [(rest, self.stage(batch.take(rest)))] if rest else []
        for position in suspects:
            self._ask("begin", [uris[position]])
            parts.append(([position], self.stage(batch.take([position]))))
            self._ask("finish", [uris[position]])
        self.ledger.finish.remote(self.name, uris)
        return _in_original_order(parts)

    def _ask(self, method: str, *args: Any) -> Any:
        """A ledger call, waiting out a lost connection: when a node dies, its workers'
        calls fail before the workers themselves are killed, and an exception here would
        fail the run as a user error instead of letting Ray retry the batch elsewhere."""
        import ray
        from ray.exceptions import ActorUnavailableError

        deadline = time.monotonic() + LEDGER_PATIENCE_SECONDS
        while True:
            try:
                return ray.get(getattr(self.ledger, method).remote(self.name, *args))
            except ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)


def _reject(batch: pa.Table, crashed: list[bool], stage: str, max_crashes: int) -> pa.Table:
    """Rows whose worker died `max_crashes` times become rejected rows (later stages and
    the writer pass rejected rows through)."""
    if not any(crashed):
        return batch
    mask = pa.array(crashed)
    detail = f"the worker process died {max_crashes} times while processing this record"
    updates = {
        "status": records.REJECTED,
        "reject_stage": stage,
        "reason": REASON,
        "detail": detail,
    }
    for column, value in updates.items():
        values = pc.if_else(mask, pa.scalar(value, pa.string()), batch.column(column))
        batch = batch.set_column(batch.column_names.index(column), column, values)
    return batch


def _in_original_order(parts: list[tuple[list[int], pa.Table]]) -> pa.Table:
    positions = [p for indices, _ in parts for p in indices]
    table = pa.concat_tables([part for _, part in parts], promote_options="permissive")
    order = sorted(range(len(positions)), key=positions.__getitem__)
    return table.take(order)
