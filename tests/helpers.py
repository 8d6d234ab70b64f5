"""Small builders shared by tests (not a test module)."""

from __future__ import annotations

import pyarrow as pa

from factory import records


def listing(uris: list[str], **columns: list) -> pa.Table:
    """A listing-shaped table: all rows ok, catalogue columns null unless given."""
    n = len(uris)
    data = {
        "uri": uris,
        "input_index": list(range(n)),
        "status": [records.OK] * n,
        "reject_stage": [None] * n,
        "reason": [None] * n,
        "detail": [None] * n,
        "duplicate_of": [None] * n,
        "duplicate_kind": [None] * n,
    }
    for name in records.CATALOGUE_COLUMNS:
        data[name] = [None] * n
    table = pa.table(data, schema=records.LISTING_SCHEMA)
    for name, values in columns.items():
        table = table.append_column(name, pa.array(values))
    return table
