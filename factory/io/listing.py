"""Turn an input URI into the listing: one row per input, in a stable order, in batches.

Three kinds of input:
- a local directory (recursive) or an `s3://bucket/prefix`: every file whose extension is
  in `extensions` (all files when empty), in path order;
- a manifest file (.parquet, .jsonl/.ndjson, .csv) with a `uri` column and optional
  catalogue columns; relative URIs are resolved against the manifest's own folder.
Manifest rows without a usable `uri` are listed as already rejected, so they are counted.

`ListingScan` yields the listing a batch at a time, so a run over millions of inputs never
holds all of it: folders and S3 prefixes are walked a folder at a time (one folder's names
in memory), manifests parsed incrementally.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterator
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

SCAN_BATCH_ROWS = 16_384


class ListingError(ValueError):
    """The input cannot be listed at all (missing, empty manifest, no uri column)."""


@dataclass(frozen=True)
class Listing:
    table: pa.Table  # records.LISTING_SCHEMA
    ignored_files: int  # files under a folder/prefix whose extension is not an input


class ListingScan:
    """Iterate to get the listing as LISTING_SCHEMA tables, `input_index` running on
    across them: `batch_rows` rows each from folders and Parquet manifests, a parse block
    (TEXT_BLOCK_BYTES) each from CSV and JSONL. `ignored_files` is final once iteration
    ends."""

    def __init__(
        self,
        uri: str,
        extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
        batch_rows: int = SCAN_BATCH_ROWS,
    ):
        self.uri, self.extensions, self.batch_rows = uri, extensions, batch_rows
        self.ignored_files = 0

    def __iter__(self) -> Iterator[pa.Table]:
        listed = 0
        for uri_column, catalogue in self._columns():
            yield _listing_table(uri_column, catalogue, first_index=listed)
            listed += len(uri_column)
        if not listed and self._is_manifest():
            raise ListingError(f"manifest {self.uri!r} has no rows")
        if not listed:
            raise ListingError(
                f"no input images under {self.uri!r} (extensions: {list(self.extensions)})"
            )

    def _is_manifest(self) -> bool:
        return self.uri.lower().endswith(MANIFEST_SUFFIXES)

    def _columns(self) -> Iterator[tuple[pa.Array | pa.ChunkedArray, dict]]:
        if self._is_manifest():
            yield from _manifest_batches(self.uri, self.batch_rows)
            return
        files = _s3_files(self.uri) if uris.is_s3(self.uri) else _local_files(self.uri)
        wanted: list[str] = []
        for name in files:
            if self.extensions and not name.lower().endswith(self.extensions):
                self.ignored_files += 1
                continue
            wanted.append(name)
            if len(wanted) == self.batch_rows:
                yield pa.array(wanted, pa.string()), {}
                wanted = []
        if wanted:
            yield pa.array(wanted, pa.string()), {}


def list_inputs(uri: str, extensions: tuple[str, ...] = DEFAULT_EXTENSIONS) -> Listing:
    """The whole listing as one table (for small inputs and tests; runs stream a scan)."""
    scan = ListingScan(uri, extensions)
    table = pa.concat_tables(list(scan))
    return Listing(table, ignored_files=scan.ignored_files)


def _local_files(uri: str) -> Iterator[str]:
    _, root = uris.filesystem(uri)
    if os.path.isfile(root):
        raise ListingError(
            f"input {uri!r} is a file; give a folder, an s3:// prefix or a manifest "
            f"({', '.join(MANIFEST_SUFFIXES)})"
        )
    if not os.path.isdir(root):
        raise ListingError(f"input {uri!r} does not exist")
    return (uris.local_path_to_uri(path) for path in _in_path_order(root, _local_folder))


def _s3_files(uri: str) -> Iterator[str]:
    filesystem, root = uris.filesystem(uri)

    def s3_folder(folder: str) -> list[tuple[str, str, bool]]:
        selector = pafs.FileSelector(folder, allow_not_found=True)
        return [
            (entry.base_name, entry.path, entry.type == pafs.FileType.Directory)
            for entry in filesystem.get_file_info(selector)
        ]

    return (f"s3://{path}" for path in _in_path_order(root.rstrip("/"), s3_folder))


Folder = Callable[[str], list[tuple[str, str, bool]]]  # path -> (name, path, is folder)


def _in_path_order(folder: str, entries: Folder) -> Iterator[str]:
    """File paths under `folder` in the order sorting them would give, one folder in
    memory at a time: a folder sorts as its name plus '/', which is where its files'
    paths fall. Names starting with '.' are skipped."""
    keyed = sorted(
        (name + "/" if is_folder else name, path, is_folder)
        for name, path, is_folder in entries(folder)
        if not name.startswith(".")
    )
    for _, path, is_folder in keyed:
        if is_folder:
            yield from _in_path_order(path, entries)
        else:
            yield path


def _local_folder(folder: str) -> list[tuple[str, str, bool]]:
    # scandir keeps undecodable names (as surrogates), which pyarrow's listing cannot;
    # linked folders are not followed (as os.walk does not)
    with os.scandir(folder) as found:
        return [
            (entry.name, entry.path, entry.is_dir())
            for entry in found
            if not (entry.is_dir() and entry.is_symlink())
        ]


def _manifest_batches(
    uri: str, batch_rows: int
) -> Iterator[tuple[pa.ChunkedArray, dict[str, pa.ChunkedArray]]]:
    base = uris.parent(uri)
    for batch in _manifest_tables(uri, batch_rows):
        _check_uri_column(uri, batch.column_names)
        catalogue = {
            name: pc.cast(batch.column(name), pa.string())
            for name in records.CATALOGUE_COLUMNS
            if name in batch.column_names
        }
        yield _resolved(base, batch.column("uri")), catalogue


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


def _manifest_tables(uri: str, batch_rows: int) -> Iterator[pa.Table]:
    """The manifest's rows, a batch at a time, catalogue text kept as written."""
    import pyarrow.parquet as pq

    filesystem, path = uris.filesystem(uri)
    if filesystem.get_file_info(path).type != pafs.FileType.File:
        raise ListingError(f"manifest {uri!r} does not exist")
    lowered = uri.lower()
    try:
        if lowered.endswith(".parquet"):
            manifest = pq.ParquetFile(path, filesystem=filesystem)
            names = manifest.schema_arrow.names
            _check_uri_column(uri, names)
            wanted = [name for name in names if _listed_column(name)]
            for batch in manifest.iter_batches(batch_size=batch_rows, columns=wanted):
                yield pa.Table.from_batches([batch])
            return
        with filesystem.open_input_stream(path) as stream:
            reader = (
                _csv_reader(uri, stream, _csv_header(filesystem, path))
                if lowered.endswith(".csv")
                else _json_reader(stream)
            )
            for batch in reader:
                yield pa.Table.from_batches([batch])
    except (pa.ArrowInvalid, UnicodeDecodeError) as error:
        raise ListingError(f"manifest {uri!r} cannot be parsed: {error}") from error


def _check_uri_column(uri: str, names: list[str]) -> None:
    if "uri" not in names:
        raise ListingError(f"manifest {uri!r} has no 'uri' column (columns: {names})")


# Text manifests are parsed a block at a time, a batch per block: 1 MB holds ~5-20k rows
TEXT_BLOCK_BYTES = 1 << 20


def _csv_header(filesystem: pafs.FileSystem, path: str) -> list[str]:
    with filesystem.open_input_stream(path) as stream:
        head = stream.read(1 << 16).decode("utf-8-sig", errors="replace")
    return next(csv.reader(io.StringIO(head.split("\n", 1)[0])), [])


def _csv_reader(uri: str, stream: pa.NativeFile, header: list[str]):
    import pyarrow.csv as pacsv

    _check_uri_column(uri, header)
    options = pacsv.ConvertOptions(
        # every column as text: object ids like "00123" must keep their zeros
        column_types=dict.fromkeys(header, pa.string()),
        strings_can_be_null=True,
        include_columns=[name for name in header if _listed_column(name)],
    )
    read_options = pacsv.ReadOptions(block_size=TEXT_BLOCK_BYTES)
    return pacsv.open_csv(stream, read_options=read_options, convert_options=options)


def _json_reader(stream: pa.NativeFile):
    import pyarrow.json as pajson

    return pajson.open_json(stream, read_options=pajson.ReadOptions(block_size=TEXT_BLOCK_BYTES))


def _listed_column(name: str) -> bool:
    return name == "uri" or name in records.CATALOGUE_COLUMNS


def _resolve(base: str, value: str | None) -> str | None:
    if value is None or "://" in value or value.startswith("/"):
        return value
    return uris.join(base, value)


def _listing_table(
    listed: pa.Array | pa.ChunkedArray,
    catalogue: dict[str, pa.ChunkedArray],
    first_index: int = 0,
) -> pa.Table:
    count = len(listed)
    missing = pc.is_null(listed)

    def when_missing(text: str) -> pa.ChunkedArray | pa.Array:
        return pc.if_else(missing, pa.scalar(text), pa.scalar(None, pa.string()))

    columns = {
        "uri": pc.fill_null(listed, ""),
        "input_index": pa.array(np.arange(first_index, first_index + count, dtype=np.int64)),
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
