"""The stage contract: declared columns, row-level rejection, per-stage timing.

A stage is a callable class. Its constructor takes the stage's typed config and loads
whatever it needs once per actor; `__call__(table) -> table` maps a pyarrow batch and
delegates the bookkeeping to `map_rows` or `map_batch` below, which
- fail loudly if a needed column is missing (a wiring bug, not a bad record),
- pass rows that are already rejected or duplicate through untouched,
- turn an exception on one record into a rejected row with the stage and the reason,
- add the stage's declared columns with their declared Arrow types,
- record the stage's seconds per row so the writer can sum timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from factory import records
from factory.records import Duplicate, Rejection, RejectRecord
from factory.stage_kit.metrics import record_batch


class MissingColumnsError(KeyError):
    """A stage was wired after a stage that does not produce what it needs."""


class Resources(BaseModel):
    """Where and how wide a stage runs; kept apart from what the stage does."""

    model_config = ConfigDict(extra="forbid")

    compute: Literal["tasks", "actors"] = Field(
        "tasks", description="stateless tasks, or a pool of actors that load a model once"
    )
    concurrency: int | tuple[int, int] | None = Field(
        None, description="actor-pool size (n or [min, max]); for tasks, a cap (None: no cap)"
    )
    batch_size: int = Field(16, ge=1, description="rows per batch handed to the stage")
    num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per task or actor")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved per task or actor")
    custom_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Ray custom resources per task or actor, e.g. {vlm_slot: 1}: cluster.yaml's "
        "node types advertise vlm_slot (gpu_vlm) and train_slot (gpu_train) to pin a type",
    )


# Short CPU-bound tasks (read, decode, hash): half a CPU each, so on a 2-core machine two
# run beside a 1-CPU model actor and the small dedup and writer reservations.
CHEAP_TASKS = Resources(compute="tasks", num_cpus=0.5, batch_size=16)


class StageConfig(BaseModel):
    """Base for every stage's typed config: the stage's own fields plus its resources."""

    model_config = ConfigDict(extra="forbid")

    resources: Resources = Field(default_factory=Resources)


@dataclass(frozen=True)
class Columns:
    """What a stage reads, adds (name -> Arrow type) and drops.

    `optional` columns are read when an earlier stage produced them (experts a run may
    skip); `needs` must be there.
    """

    stage: str
    needs: tuple[str, ...]
    adds: dict[str, pa.DataType] = field(default_factory=dict)
    drops: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()

    def fields(self) -> list[pa.Field]:
        return [pa.field(name, dtype) for name, dtype in self.adds.items()]


Row = dict[str, Any]
Result = Row | Rejection | Duplicate


def fixed_columns(columns: Columns) -> Any:
    """`columns_for` of a stage whose columns do not depend on its config: every stage
    class answers `columns_for(config, **options)`, the plan asks each the same way."""
    return staticmethod(lambda config, **options: columns)


def check_columns(table: pa.Table, columns: Columns) -> None:
    missing = [name for name in columns.needs if name not in table.column_names]
    if missing:
        raise MissingColumnsError(
            f"stage {columns.stage!r} needs columns {missing} but the batch has "
            f"{table.column_names}; check the stage order in the pipeline"
        )


def map_rows(table: pa.Table, columns: Columns, fn: Callable[[Row], Row]) -> pa.Table:
    """Apply `fn` to each ok row; `fn` returns the added values or raises RejectRecord."""

    def run_each(rows: list[Row]) -> list[Result]:
        return [_guarded(fn, row) for row in rows]

    return map_batch(table, columns, run_each)


def map_batch(
    table: pa.Table, columns: Columns, fn: Callable[[list[Row]], Sequence[Result]]
) -> pa.Table:
    """Apply `fn` to all ok rows at once (for batched models).

    If the batched call raises, each row is retried alone so one poisonous record is
    rejected instead of taking its whole batch down.
    """
    check_columns(table, columns)
    started = time.perf_counter()
    ok_positions = _ok_positions(table)
    present = tuple(name for name in columns.optional if name in table.column_names)
    rows = _rows(table, columns.needs + present, ok_positions)
    if rows:
        try:
            results = list(fn(rows))
            if len(results) != len(rows):
                raise RuntimeError(f"returned {len(results)} results for {len(rows)} rows")
        except Exception:
            results = [_guarded(lambda row: _single(fn, row), row) for row in rows]
    else:
        results = []
    elapsed = time.perf_counter() - started
    record_batch(columns.stage, len(rows), _outcomes(results), elapsed)
    return _assemble(table, columns, ok_positions, results, elapsed)


def _outcomes(results: Sequence[Result]) -> dict[str, int]:
    rejected = sum(isinstance(result, Rejection) for result in results)
    duplicates = sum(isinstance(result, Duplicate) for result in results)
    return {
        records.OK: len(results) - rejected - duplicates,
        records.REJECTED: rejected,
        records.DUPLICATE: duplicates,
    }


def _single(fn: Callable[[list[Row]], Sequence[Result]], row: Row) -> Result:
    (result,) = fn([row])
    return result


def _guarded(fn: Callable[[Row], Result], row: Row) -> Result:
    try:
        return fn(row)
    except RejectRecord as rejected:
        return rejected.rejection
    except Exception as error:  # a crash in one record never kills the job
        return Rejection("error", f"{type(error).__name__}: {error}")


def _ok_positions(table: pa.Table) -> list[int]:
    mask = pc.equal(table.column("status"), records.OK)
    return pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()


def _rows(table: pa.Table, names: tuple[str, ...], positions: list[int]) -> list[Row]:
    if not positions:
        return []
    picked = table.select(list(names)).take(pa.array(positions, pa.int64()))
    return picked.to_pylist()


def _assemble(
    table: pa.Table,
    columns: Columns,
    ok_positions: list[int],
    results: list[Result],
    elapsed: float,
) -> pa.Table:
    n = table.num_rows
    added: dict[str, list[Any]] = {name: [None] * n for name in columns.adds}
    status = table.column("status").to_pylist()
    bookkeeping = {
        name: table.column(name).to_pylist()
        for name in ("reject_stage", "reason", "detail", "duplicate_of", "duplicate_kind")
    }
    for position, result in zip(ok_positions, results, strict=True):
        if isinstance(result, Duplicate):
            status[position] = records.DUPLICATE
            bookkeeping["duplicate_of"][position] = result.of
            bookkeeping["duplicate_kind"][position] = result.kind
            continue
        if isinstance(result, Rejection):
            status[position] = records.REJECTED
            bookkeeping["reject_stage"][position] = columns.stage
            bookkeeping["reason"][position] = result.reason
            bookkeeping["detail"][position] = result.detail
            continue
        for name in columns.adds:
            added[name][position] = result.get(name)
    out = table
    for name, values in [("status", status), *bookkeeping.items()]:
        out = out.set_column(out.column_names.index(name), name, pa.array(values, pa.string()))
    for name, dtype in columns.adds.items():
        out = _put(out, name, pa.array(added[name], dtype))
    timing = pa.array([elapsed / n if n else 0.0] * n, pa.float64())
    out = _put(out, records.TIMING_PREFIX + columns.stage, timing)
    return out.drop_columns([name for name in columns.drops if name in out.column_names])


def _put(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    if name in table.column_names:
        return table.set_column(table.column_names.index(name), name, values)
    return table.append_column(name, values)
