"""The listing as a Ray Data datasource: one read task per block of `rows` inputs.

`ray.data.from_arrow(blocks)` puts every block from the driver and runs a metadata task
for each, and the driver keeps both for the whole run (~50 KB per block). A read task
here holds a view of its rows and nothing else. How many blocks there are is the plan's
business (`factory.pipeline.input_block_rows` caps it).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from ray.data.block import BlockMetadata
from ray.data.datasource import Datasource, ReadTask


class ListingDatasource(Datasource):
    def __init__(self, listing: pa.Table, rows: int):
        self._listing, self._rows = listing, rows

    def get_name(self) -> str:
        return "Listing"

    def estimate_inmemory_data_size(self) -> int:
        return self._listing.nbytes

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, **_: Any
    ) -> list[ReadTask]:
        # the block size is the run's unit of parallelism, so Ray's `parallelism` is not used
        starts = range(0, self._listing.num_rows, self._rows)
        return [self._read_task(start, per_task_row_limit) for start in starts]

    def _read_task(self, start: int, row_limit: int | None) -> ReadTask:
        rows = self._listing.slice(start, self._rows)
        metadata = BlockMetadata(
            num_rows=rows.num_rows, size_bytes=rows.nbytes, input_files=None, exec_stats=None
        )
        return ReadTask(_Rows(rows), metadata, schema=rows.schema, per_task_row_limit=row_limit)


class _Rows:
    """A read task's body: its rows. A view of the listing on the driver; copied compactly
    when pickled, since pickling a slice would ship the whole listing's buffers."""

    def __init__(self, rows: pa.Table):
        self.rows = rows

    def __call__(self) -> list[pa.Table]:
        return [self.rows]

    def __getstate__(self) -> dict[str, pa.Table]:
        return {"rows": self.rows.take(pa.array(range(self.rows.num_rows), pa.int64()))}
