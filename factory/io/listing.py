"""Turn an input URI into the listing table: one row per input, in a stable order.

Three kinds of input:
- a local directory (recursive) or an `s3://bucket/prefix`: every file whose extension is
  in `extensions` (all files when empty), sorted by path;
- a manifest file (.parquet, .jsonl/.ndjson, .csv) with a `uri` column and optional
  catalogue columns; relative URIs are resolved against the manifest's own folder.
Manifest rows without a usable `uri` are listed as already rejected, so they are counted.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from factory import records
from factory.io import uris

MANIFEST_SUFFIXES = (".parquet", ".jsonl", ".ndjson", ".csv")

DEFAULT_EXTENSIONS = (
    ".jpg", ".jpeg", ".jpe", ".png", ".gif", ".webp", ".tif", ".tiff", ".bmp",
)  # fmt: skip


class ListingError(ValueError):
    """The input cannot be listed at all (missing, empty manifest, no uri column)."""


@dataclass(frozen=True)
class Listing:
    table: pa.Table  # records.LISTING_SCHEMA
    ignored_files: int  # files under a folder/prefix whose extension is not an input


def list_inputs(uri: str, extensions: tuple[str, ...] = DEFAULT_EXTENSIONS) -> Listing:
    if uri.lower().endswith(MANIFEST_SUFFIXES):
        return Listing(_listing_table(*_read_manifest(uri)), ignored_files=0)
    files = _s3_files(uri) if uris.is_s3(uri) else _local_files(uri)
    wanted = [name for name in files if not extensions or name.lower().endswith(extensions)]
    if not wanted:
        raise ListingError(f"no input images under {uri!r} (extensions: {list(extensions)})")
    listed = pa.array(wanted, pa.string())
    return Listing(_listing_table(listed, {}), ignored_files=len(files) - len(wanted))


def _local_files(uri: str) -> list[str]:
    _, root = uris.filesystem(uri)
    if os.path.isfile(root):
        raise ListingError(
            f"input {uri!r} is a file; give a folder, an s3:// prefix or a manifest "
            f"({', '.join(MANIFEST_SUFFIXES)})"
        )
    if not os.path.isdir(root):
        raise ListingError(f"input {uri!r} does not exist")
    found = []
    # os.walk keeps undecodable names (as surrogates), which pyarrow's listing cannot
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        found.extend(os.path.join(folder, n) for n in names if not n.startswith("."))
    return sorted(uris.local_path_to_uri(path) for path in found)


def _s3_files(uri: str) -> list[str]:
    filesystem, root = uris.filesystem(uri)
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    paths = sorted(
        entry.path
        for entry in filesystem.get_file_info(selector)
        if entry.type == pafs.FileType.File
        and not any(part.startswith(".") for part in entry.path[len(root) :].split("/"))
    )
    return [f"s3://{path}" for path in paths]


def _read_manifest(uri: str) -> tuple[pa.ChunkedArray, dict[str, pa.ChunkedArray]]:
    table = _read_manifest_table(uri)
    if "uri" not in table.column_names:
        raise ListingError(f"manifest {uri!r} has no 'uri' column (columns: {table.column_names})")
    if table.num_rows == 0:
        raise ListingError(f"manifest {uri!r} has no rows")
    catalogue = {
        name: pc.cast(table.column(name), pa.string())
        for name in records.CATALOGUE_COLUMNS
        if name in table.column_names
    }
    return _resolved(uris.parent(uri), table.column("uri")), catalogue


def _resolved(base: str, column: pa.ChunkedArray) -> pa.ChunkedArray:
    """URIs with blanks as nulls; relative ones joined onto the manifest's folder.

    Stays in Arrow when every URI is absolute (the usual case for millions of rows): a
    Python string per row would cost the driver ~100 bytes more per input.
    """
    values = pc.utf8_trim_whitespace(pc.cast(column, pa.string()))
    values = pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)
    absolute = pc.or_(pc.match_substring(values, "://"), pc.starts_with(values, "/"))
    if pc.all(pc.fill_null(absolute, True)).as_py():
        return values
    joined = [_resolve(base, value) for value in values.to_pylist()]
    return pa.chunked_array([pa.array(joined, pa.string())])


def _read_manifest_table(uri: str) -> pa.Table:
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    filesystem, path = uris.filesystem(uri)
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        raise ListingError(f"manifest {uri!r} does not exist")
    lowered = uri.lower()
    if lowered.endswith(".parquet"):
        return pq.read_table(path, filesystem=filesystem)
    with filesystem.open_input_stream(path) as stream:
        data = stream.read()
    if lowered.endswith(".csv"):
        # every column as text: object ids like "00123" must keep their zeros
        header = next(csv.reader(io.StringIO(data.decode("utf-8-sig"))), [])
        options = pacsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True
        )
        return pacsv.read_csv(pa.BufferReader(data), convert_options=options)
    return pajson.read_json(pa.BufferReader(data))


def _resolve(base: str, value: str | None) -> str | None:
    if value is None or "://" in value or value.startswith("/"):
        return value
    return uris.join(base, value)


def _listing_table(
    listed: pa.Array | pa.ChunkedArray, catalogue: dict[str, pa.ChunkedArray]
) -> pa.Table:
    count = len(listed)
    missing = pc.is_null(listed)

    def when_missing(text: str) -> pa.ChunkedArray | pa.Array:
        return pc.if_else(missing, pa.scalar(text), pa.scalar(None, pa.string()))

    columns = {
        "uri": pc.fill_null(listed, ""),
        "input_index": pa.array(np.arange(count, dtype=np.int64)),
        "status": pc.if_else(missing, records.REJECTED, records.OK),
        "reject_stage": when_missing("list"),
        "reason": when_missing("missing_uri"),
        "detail": when_missing("manifest row has an empty 'uri'"),
    }
    return pa.table(
        [columns.get(f.name, catalogue.get(f.name, pa.nulls(count, f.type))) for f in _FIELDS],
        schema=records.LISTING_SCHEMA,
    )


_FIELDS = list(records.LISTING_SCHEMA)
