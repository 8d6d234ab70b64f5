"""Rows for training, read from wherever the factory (or a person) left them.

A source is one of
- a caption run's output folder or S3 prefix: its committed `captions/part-*.parquet`;
- a folder or prefix of `part-*.parquet` shards itself (e.g. the `captions/` folder);
- one Parquet file (`.parquet`), such as the pairs file of `review import`;
- one JSON Lines file (`.jsonl` / `.ndjson`), one object per line, such as a manifest with
  several captions per image.

Only the columns asked for are read: caption rows also carry image bytes and embeddings,
which training examples never need (the trainer loads images by uri).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from factory.io import uris
from factory.io.outputs import shard_paths

PARQUET_SUFFIXES = (".parquet",)
JSONL_SUFFIXES = (".jsonl", ".ndjson")
CAPTIONS = "captions"


@dataclass(frozen=True)
class SourceRows:
    """The rows of a source, restricted to the wanted columns it has."""

    source: str
    columns: tuple[str, ...]  # the wanted columns present in at least one row or shard
    available: tuple[str, ...]  # every column the source has, for error messages
    rows: list[dict]


def read_rows(source: str, wanted: Sequence[str]) -> SourceRows:
    """Read `wanted` columns (those present) of every row of `source`."""
    lowered = source.lower()
    if lowered.endswith(JSONL_SUFFIXES):
        return _read_jsonl(source, wanted)
    if lowered.endswith(PARQUET_SUFFIXES):
        if uris.size_of(source) is None:
            raise FileNotFoundError(f"no Parquet file at {source}")
        filesystem, path = uris.filesystem(source)
        return _read_parquet(source, filesystem, [path], wanted)
    # a run's output folder first; failing that, a folder of shards named directly
    for folder in (CAPTIONS, "."):
        filesystem, shards = shard_paths(source, folder)
        if shards:
            return _read_parquet(source, filesystem, shards, wanted)
    raise FileNotFoundError(
        f"no training rows at {source}: expected a caption run output (with "
        f"{CAPTIONS}/part-*.parquet), a folder of part-*.parquet shards, or a "
        f"{'/'.join(PARQUET_SUFFIXES + JSONL_SUFFIXES)} file"
    )


def _read_parquet(source: str, filesystem, paths: list[str], wanted: Sequence[str]) -> SourceRows:
    available: list[str] = []
    tables: list[pa.Table] = []
    for path in paths:
        schema = pq.read_schema(path, filesystem=filesystem)
        available.extend(name for name in schema.names if name not in available)
        # shards of one run can differ (a stage added later), so select per shard
        present = [name for name in wanted if name in schema.names]
        tables.append(pq.read_table(path, filesystem=filesystem, columns=present))
    table = pa.concat_tables(tables, promote_options="default")
    return SourceRows(source, tuple(table.column_names), tuple(available), table.to_pylist())


def _read_jsonl(source: str, wanted: Sequence[str]) -> SourceRows:
    if uris.size_of(source) is None:
        raise FileNotFoundError(f"no JSON Lines file at {source}")
    text = uris.read_bytes(source).decode("utf-8")
    rows: list[dict] = []
    available: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source}, line {number}: not valid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise ValueError(f"{source}, line {number}: expected a JSON object per line")
        available.extend(name for name in record if name not in available)
        rows.append({name: record.get(name) for name in wanted})
    present = tuple(name for name in wanted if name in available)
    # a wanted column no line has stays out of the rows, as it would for Parquet
    rows = [{name: row[name] for name in present} for row in rows]
    return SourceRows(source, present, tuple(available), rows)
