"""The listing as read tasks: every row once, in order, and each task ships only its rows."""

from __future__ import annotations

import pickle

import pyarrow as pa

from factory.io.listing_source import ListingDatasource


def listing(rows: int) -> pa.Table:
    return pa.table({"uri": [f"s3://bucket/images/{i:07d}.jpg" for i in range(rows)]})


def test_read_tasks_cover_the_listing_once_in_order():
    tasks = ListingDatasource(listing(1000), rows=96).get_read_tasks(parallelism=4)
    assert [task.metadata.num_rows for task in tasks] == [96] * 10 + [40]
    read = [uri for task in tasks for block in task() for uri in block.column("uri").to_pylist()]
    assert read == listing(1000).column("uri").to_pylist()


def test_a_pickled_read_task_carries_its_rows_not_the_whole_listing():
    whole = listing(100_000)
    task = ListingDatasource(whole, rows=32).get_read_tasks(parallelism=1)[7]
    shipped = pickle.loads(pickle.dumps(task))
    rows = next(iter(shipped()))
    assert rows.column("uri").to_pylist() == whole.column("uri").to_pylist()[224:256]
    # a pickled slice would hold the listing's buffers: ~4 MB here, not ~2 KB
    assert len(pickle.dumps(task)) < 64 * 32 + 4096
