"""The listing as a Ray Data datasource: one read task per block of `rows` inputs.

`ray.data.from_arrow(blocks)` puts every block from the driver and runs a metadata task
for each, and the driver keeps both for the whole run (~50 KB per block). Here a read task
carries where its rows are in the spilled listing (`listing_spill`), about a kilobyte,
and reads them itself. How many blocks there are is the plan's business
(`factory.pipeline.input_block_rows` caps it).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask

from factory import records
from factory.io.listing_spill import Segment, SpilledListing, read_segment


class ListingDatasource(Datasource):
    def __init__(self, listing: SpilledListing, rows: int):
        self._listing, self._rows = listing, rows

    def get_name(self) -> str:
        return "Listing"

    def estimate_inmemory_data_size(self) -> int:
        return self._listing.nbytes

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, **_: Any
    ) -> list[ReadTask]:
        # the block size is the run's unit of parallelism, so Ray's `parallelism` is not used
        starts = range(0, self._listing.rows, self._rows)
        return [self._read_task(start, per_task_row_limit) for start in starts]

    def _read_task(self, start: int, row_limit: int | None) -> ReadTask:
        rows = min(self._rows, self._listing.rows - start)
        row_bytes = self._listing.nbytes // max(self._listing.rows, 1)
        metadata = BlockMetadata(
            num_rows=rows, size_bytes=rows * row_bytes, input_files=None, exec_stats=None
        )
        return ReadTask(
            _ReadRows(self._listing.segments(start, rows)),
            metadata,
            schema=records.LISTING_SCHEMA,
            per_task_row_limit=row_limit,
        )


class _ReadRows:
    """A read task's body: its rows, read from the listing's parts."""

    def __init__(self, segments: list[Segment]):
        self.segments = segments

    def __call__(self) -> list[pa.Table]:
        return [pa.concat_tables(read_segment(segment) for segment in self.segments)]
