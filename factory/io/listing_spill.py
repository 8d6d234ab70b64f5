"""The listing written where every read task can reach it, so the driver holds none of it.

A run streams its `ListingScan` into Parquet parts beside its outputs
(`<output>/_listing/<run_id>/part-NNNNN.parquet`), leaving out inputs an earlier run
already wrote, and keeps only each part's row count. Read tasks (`listing_source`) read
their rows back from the parts; the run removes the folder when it ends.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from factory.io import uris

ROW_GROUP_ROWS = 1024  # the least a read task reads: ~100 KB of listing

Ranges = list[tuple[int, int]]  # [start, end) runs of input_index, ascending


@dataclass(frozen=True)
class Segment:
    part: str  # the part's URI (absolute for local files)
    offset: int  # first row within the part
    rows: int


@dataclass
class SpilledListing:
    folder: str
    inputs: int = 0  # rows listed, including those already written by an earlier run
    ignored_files: int = 0
    rows: int = 0  # rows to do: the inputs no earlier run has written
    nbytes: int = 0  # Arrow size of the rows to do
    parts: list[tuple[str, int]] = field(default_factory=list)  # (URI, rows to do)
    # the rows' input indexes as runs, kept while spilling: one run unless a resume left
    # gaps; dedup's listing order steps over the gaps without reading the parts back
    index_ranges: Ranges = field(default_factory=list)

    def segments(self, start: int, rows: int) -> list[Segment]:
        """Where rows [start, start + rows) of the rows to do are, part by part."""
        ends = list(itertools.accumulate(part_rows for _, part_rows in self.parts))
        found = []
        index = bisect.bisect_right(ends, start)
        while rows > 0:
            part, part_rows = self.parts[index]
            offset = start - (ends[index] - part_rows)
            taken = min(rows, part_rows - offset)
            found.append(Segment(part, offset, taken))
            start, rows, index = start + taken, rows - taken, index + 1
        return found

    def remove(self) -> None:
        """Delete the run's parts, and `_listing/` too when no other run's are in it."""
        filesystem, path = uris.filesystem(self.folder)
        if filesystem.get_file_info(path).type != pafs.FileType.NotFound:
            filesystem.delete_dir(path)
        parent = path.rsplit("/", 1)[0]
        others = filesystem.get_file_info(pafs.FileSelector(parent, allow_not_found=True))
        if not others and filesystem.get_file_info(parent).type == pafs.FileType.Directory:
            filesystem.delete_dir(parent)


def spill_listing(scan: Iterable[pa.Table], folder: str, done: set[str]) -> SpilledListing:
    """Write the scan's rows that are not in `done` (URIs already written) into `folder`."""
    import pyarrow.parquet as pq

    filesystem, root = uris.filesystem(folder)
    spilled = SpilledListing(folder=folder)
    written = pa.array(sorted(done), pa.string()) if done else None
    try:
        for batch in scan:
            spilled.inputs += batch.num_rows
            if written is not None:
                batch = batch.filter(pc.invert(pc.is_in(batch.column("uri"), written)))
            if not batch.num_rows:
                continue
            path = f"{root}/part-{len(spilled.parts):05d}.parquet"
            filesystem.create_dir(root, recursive=True)
            pq.write_table(batch, path, filesystem=filesystem, row_group_size=ROW_GROUP_ROWS)
            spilled.parts.append((_uri(folder, path), batch.num_rows))
            spilled.rows += batch.num_rows
            spilled.nbytes += batch.nbytes
            indexes = index_ranges(batch.column("input_index").to_numpy())
            extend_ranges(spilled.index_ranges, indexes)
    except BaseException:
        spilled.remove()
        raise
    spilled.ignored_files = getattr(scan, "ignored_files", 0)
    return spilled


def index_ranges(indexes: np.ndarray) -> Ranges:
    """Runs of consecutive values in an ascending array of input indexes."""
    if not len(indexes):
        return []
    breaks = np.flatnonzero(np.diff(indexes) != 1) + 1
    starts = np.concatenate([[0], breaks])
    ends = np.concatenate([breaks, [len(indexes)]])
    return [(int(indexes[s]), int(indexes[e - 1]) + 1) for s, e in zip(starts, ends, strict=True)]


def extend_ranges(ranges: Ranges, more: Ranges) -> None:
    """Append `more` to `ranges` in place, joining a run that continues the last one (only
    the tail is touched, so spilling stays linear in the runs)."""
    for start, end in more:
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))


def read_segment(segment: Segment) -> pa.Table:
    """The segment's rows, reading only the row groups that hold them."""
    return uris.retry_transient(lambda: _read_segment(segment))


def _read_segment(segment: Segment) -> pa.Table:
    import pyarrow.parquet as pq

    filesystem, path = uris.filesystem(segment.part)
    part = pq.ParquetFile(path, filesystem=filesystem)
    groups, first_row, group_start = [], None, 0
    for group in range(part.metadata.num_row_groups):
        group_rows = part.metadata.row_group(group).num_rows
        group_end = group_start + group_rows
        if group_end > segment.offset and group_start < segment.offset + segment.rows:
            groups.append(group)
            first_row = group_start if first_row is None else first_row
        group_start = group_end
    table = part.read_row_groups(groups)
    return table.slice(segment.offset - (first_row or 0), segment.rows)


def _uri(folder: str, path: str) -> str:
    return f"s3://{path}" if uris.is_s3(folder) else path
