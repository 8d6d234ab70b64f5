"""Read each input's bytes from local disk or S3; a file that cannot be read is rejected."""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from factory.io import uris
from factory.records import RejectRecord
from factory.stage_kit.contract import (
    CHEAP_TASKS,
    Columns,
    Resources,
    Row,
    StageConfig,
    fixed_columns,
    map_rows,
)


class ReadConfig(StageConfig):
    """Reading has no knobs of its own; the size limit comes from validation."""

    resources: Resources = Field(default_factory=lambda: CHEAP_TASKS.model_copy())


class ReadStage:
    COLUMNS = Columns(stage="read", needs=("uri",), adds={"data": pa.binary()})
    columns_for = fixed_columns(COLUMNS)

    def __init__(self, config: ReadConfig, max_bytes: int):
        self.config = config
        self.max_bytes = max_bytes

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_rows(batch, self.COLUMNS, self._read)

    def _read(self, row: Row) -> Row:
        uri = row["uri"]
        try:
            size = uris.size_of(uri)
        except (OSError, ValueError) as error:
            raise RejectRecord("unreadable", f"cannot stat {uri}: {error}") from error
        if size is None:
            raise RejectRecord("unreadable", f"no such file: {uri}")
        # checked before reading so a huge object is never downloaded
        if size > self.max_bytes:
            raise RejectRecord(
                "file_too_large", f"file is {size:,} bytes; the limit is {self.max_bytes:,}"
            )
        try:
            return {"data": uris.read_bytes(uri)}
        except OSError as error:
            raise RejectRecord("unreadable", f"cannot read {uri}: {error}") from error
