"""The output layout of a caption run, and resume.

    OUTPUT/captions/part-*.parquet     one row per accepted image
    OUTPUT/rejected/part-*.parquet     one row per rejected input, with stage and reason
    OUTPUT/duplicates/part-*.parquet   one row per duplicate, with what it duplicates
    OUTPUT/run.json                    resolved config, versions, counts, timings

A shard is named after the URIs it holds, so a batch written twice (a retried task, a
rerun) overwrites its own shard instead of adding rows; shards appear only complete.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from factory import records
from factory.io import uris

SUMMARY_SCHEMA = pa.schema(
    [
        pa.field("accepted", pa.int64()),
        pa.field("rejected", pa.int64()),
        pa.field("duplicates", pa.int64()),
        pa.field("rejected_reasons", pa.string()),  # JSON {"stage/reason": n}
        pa.field("stage_seconds", pa.string()),  # JSON {"stage": seconds}
    ]
)


def shard_name(uri_values: list[str]) -> str:
    digest = hashlib.sha256("\n".join(sorted(uri_values)).encode("utf-8", "surrogatepass"))
    return f"part-{digest.hexdigest()[:20]}.parquet"


def _as_output(table: pa.Table, status: str, captions: pa.Schema, run: dict[str, str]) -> pa.Table:
    count = table.num_rows
    extra = {name: pa.array([value] * count, pa.string()) for name, value in run.items()}
    if status == records.OK:
        schema = captions
    elif status == records.REJECTED:
        schema = records.REJECTED_SCHEMA
        extra["stage"] = table.column("reject_stage")
    else:
        schema = records.DUPLICATES_SCHEMA
        extra["kind"] = table.column("duplicate_kind")
    columns = [extra[f.name] if f.name in extra else _column_or_nulls(table, f) for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _column_or_nulls(table: pa.Table, target: pa.Field) -> pa.ChunkedArray | pa.Array:
    if target.name in table.column_names:
        return table.column(target.name).cast(target.type)
    return pa.nulls(table.num_rows, target.type)


@dataclass
class ShardWriter:
    """Writes each batch's rows into captions/, rejected/ or duplicates/ by status.

    Returns one summary row per batch (counts and stage seconds) for the driver.
    """

    output: str
    captions_schema: pa.Schema
    run_id: str
    factory_version: str
    compression: str = "zstd"
    _run: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self._run = {"run_id": self.run_id, "factory_version": self.factory_version}

    def __call__(self, batch: pa.Table) -> pa.Table:
        status = batch.column("status")
        parts = {state: batch.filter(pc.equal(status, state)) for state in records.OUTPUT_DIRS}
        for state, folder in records.OUTPUT_DIRS.items():
            if parts[state].num_rows:
                self._write(
                    folder, _as_output(parts[state], state, self.captions_schema, self._run)
                )
        counts = {state: part.num_rows for state, part in parts.items()}
        rejected = parts[records.REJECTED]
        reasons = Counter(
            f"{stage}/{reason}"
            for stage, reason in zip(
                rejected.column("reject_stage").to_pylist(),
                rejected.column("reason").to_pylist(),
                strict=True,
            )
        )
        seconds = {
            name[len(records.TIMING_PREFIX) :]: pc.sum(batch.column(name)).as_py() or 0.0
            for name in batch.column_names
            if name.startswith(records.TIMING_PREFIX)
        }
        row = {
            "accepted": [counts[records.OK]],
            "rejected": [counts[records.REJECTED]],
            "duplicates": [counts[records.DUPLICATE]],
            "rejected_reasons": [json.dumps(dict(reasons))],
            "stage_seconds": [json.dumps(seconds)],
        }
        return pa.table(row, schema=SUMMARY_SCHEMA)

    def _write(self, folder: str, table: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression=self.compression)
        name = shard_name(table.column("uri").to_pylist())
        uris.write_bytes_atomically(uris.join(self.output, folder, name), buffer.getvalue())


def shard_paths(output: str, folder: str) -> tuple[pafs.FileSystem, list[str]]:
    """The committed shards (part-*.parquet; temp files excluded) of one output folder."""
    filesystem, root = uris.filesystem(uris.join(output, folder))
    selector = pafs.FileSelector(root, recursive=False, allow_not_found=True)
    shards = sorted(
        info.path
        for info in filesystem.get_file_info(selector)
        if info.type == pafs.FileType.File
        and info.base_name.startswith("part-")
        and info.base_name.endswith(".parquet")
    )
    return filesystem, shards


def read_output(output: str, folder: str, columns: list[str] | None = None) -> pa.Table | None:
    """All committed shards of one output folder, or None when there are none."""
    filesystem, shards = shard_paths(output, folder)
    if not shards:
        return None
    tables = [pq.read_table(path, filesystem=filesystem, columns=columns) for path in shards]
    return pa.concat_tables(tables, promote_options="default")


def read_output_batches(
    output: str, folder: str, columns: list[str], batch_rows: int = 65536
) -> Iterator[pa.RecordBatch]:
    """One output folder's committed shards as record batches of `columns` (those a shard
    lacks are left out): for readers that must not hold the whole folder at once."""
    filesystem, shards = shard_paths(output, folder)
    for path in shards:
        part = pq.ParquetFile(path, filesystem=filesystem)
        present = [name for name in columns if name in part.schema_arrow.names]
        yield from part.iter_batches(batch_size=batch_rows, columns=present)


def existing_uris(output: str) -> set[str]:
    """URIs already written by earlier runs into any of the three outputs."""
    done: set[str] = set()
    for folder in records.OUTPUT_DIRS.values():
        table = read_output(output, folder, columns=["uri"])
        if table is not None:
            done.update(table.column("uri").to_pylist())
    return done


def write_json(uri: str, payload: dict) -> None:
    text = json.dumps(payload, indent=2, sort_keys=True, default=str)
    uris.write_bytes_atomically(uri, text.encode("utf-8"))


def read_json(uri: str) -> dict | None:
    if uris.size_of(uri) is None:
        return None
    return json.loads(uris.read_bytes(uri))


def held_counts(output: str) -> dict[str, int]:
    """Rows the output holds in each of its three folders, from the shards' footers."""
    held = {}
    for status, folder in records.OUTPUT_DIRS.items():
        filesystem, shards = shard_paths(output, folder)
        rows = sum(pq.ParquetFile(p, filesystem=filesystem).metadata.num_rows for p in shards)
        held[OUTCOME_KEYS[status]] = rows
    return held


OUTCOME_KEYS = {
    records.OK: "accepted",
    records.REJECTED: "rejected",
    records.DUPLICATE: "duplicates",
}


def held_rejected_reasons(output: str) -> dict[str, int]:
    """`stage/reason` -> rows, over every rejected row the output holds."""
    reasons: Counter = Counter()
    for batch in read_output_batches(output, "rejected", ["stage", "reason"]):
        columns = batch.to_pydict()
        reasons.update(f"{s}/{r}" for s, r in zip(columns["stage"], columns["reason"], strict=True))
    return dict(reasons.most_common())


def output_record(output: str, previous: dict | None, this_run: dict) -> dict:
    """run.json's account of the whole output: what it holds after this run (`counts`,
    `rejected_reasons`) and every run that wrote into it (`runs`, oldest first).

    `previous` is the run.json this run replaces; one written before `runs` existed
    becomes the first entry. `this_run` holds `run_id`, `finished_at` and `counts`.
    """
    runs = list((previous or {}).get("runs") or [])
    if previous and not runs and previous.get("run_id"):
        runs.append({k: previous.get(k) for k in ("run_id", "finished_at", "counts")})
    runs.append({k: this_run[k] for k in ("run_id", "finished_at", "counts")})
    # the output as if one run had done it all: every listed input accounted for, none
    # skipped (so `inputs = accepted + rejected + duplicates` while the listing is the same)
    counts = {"inputs": this_run["counts"]["inputs"], **held_counts(output)}
    return {
        "counts": {**counts, "skipped_existing": 0},
        "rejected_reasons": held_rejected_reasons(output),
        "runs": runs,
    }
