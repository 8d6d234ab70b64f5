"""The spilled listing as read tasks: every row to do once, in order, read back by the
tasks themselves; the driver keeps row counts, and a task ships where its rows are."""

from __future__ import annotations

import os
import pickle

import pyarrow as pa
import pytest

from factory import records
from factory.io.listing import ListingError
from factory.io.listing_source import ListingDatasource
from factory.io.listing_spill import spill_listing
from tests.helpers import listing


def image_uris(rows: int) -> list[str]:
    return [f"s3://bucket/images/{i:07d}.jpg" for i in range(rows)]


def batches(uris: list[str], rows: int) -> list[pa.Table]:
    whole = listing(uris)
    return [whole.slice(start, rows) for start in range(0, whole.num_rows, rows)]


def read_all(source: ListingDatasource) -> pa.Table:
    tasks = source.get_read_tasks(parallelism=4)
    blocks = [block for task in tasks for block in pickle.loads(pickle.dumps(task))()]
    assert [block.num_rows for block in blocks] == [task.metadata.num_rows for task in tasks]
    return pa.concat_tables(blocks)


def test_read_tasks_cover_the_rows_to_do_once_in_order_across_parts(tmp_path):
    uris = image_uris(1000)
    # parts of 300 rows, blocks of 96: blocks straddle parts and row groups
    spilled = spill_listing(batches(uris, 300), str(tmp_path / "_listing" / "r"), set())
    assert [rows for _, rows in spilled.parts] == [300, 300, 300, 100]
    source = ListingDatasource(spilled, rows=96)
    assert [t.metadata.num_rows for t in source.get_read_tasks(1)] == [96] * 10 + [40]
    read = read_all(source)
    assert read.schema == records.LISTING_SCHEMA
    assert read.column("uri").to_pylist() == uris
    assert read.column("input_index").to_pylist() == list(range(1000))


def test_rows_already_written_are_left_out_but_counted_and_keep_their_index(tmp_path):
    uris = image_uris(500)
    done = {uris[0], uris[7], *uris[200:400]}
    spilled = spill_listing(batches(uris, 200), str(tmp_path / "l"), done)
    assert (spilled.inputs, spilled.rows) == (500, 298)
    assert len(spilled.parts) == 2  # the batch written wholly before has no part
    read = read_all(ListingDatasource(spilled, rows=64))
    assert read.column("uri").to_pylist() == [u for u in uris if u not in done]
    assert read.column("input_index")[:2].to_pylist() == [1, 2]
    # the indexes to do, as runs, kept while spilling: dedup's order steps over the gaps
    assert spilled.index_ranges == [(1, 7), (8, 200), (400, 500)]
    assert spill_listing(batches(uris, 200), str(tmp_path / "m"), set()).index_ranges == [(0, 500)]


def test_a_read_task_ships_where_its_rows_are_not_the_rows(tmp_path):
    spilled = spill_listing(batches(image_uris(100_000), 65_536), str(tmp_path / "l"), set())
    task = ListingDatasource(spilled, rows=512).get_read_tasks(parallelism=1)[100]
    assert len(pickle.dumps(task)) < 2048  # 512 rows of listing would be ~40 KB
    rows = next(iter(pickle.loads(pickle.dumps(task))()))
    assert rows.column("input_index").to_pylist() == list(range(51_200, 51_712))


def test_remove_deletes_the_folder_and_a_scan_failing_midway_leaves_none(tmp_path):
    folder = tmp_path / "out" / "_listing" / "run"
    other_run = spill_listing(batches(image_uris(3), 4), str(folder.parent / "other"), set())
    spill_listing(batches(image_uris(10), 4), str(folder), set()).remove()
    assert not folder.exists() and (folder.parent / "other").exists()
    other_run.remove()
    assert not folder.parent.exists()  # no empty _listing/ left beside the outputs

    def failing_scan():
        yield from batches(image_uris(10), 4)
        raise ListingError("manifest cannot be parsed: row 11")

    with pytest.raises(ListingError, match="row 11"):
        spill_listing(failing_scan(), str(folder), set())
    assert not folder.exists()


def test_parts_on_s3_are_read_back_over_http(s3_bucket):
    uris = image_uris(300)
    folder = f"s3://{s3_bucket}/run/_listing/abc"
    spilled = spill_listing(batches(uris, 128), folder, {uris[5]})
    assert all(part.startswith(f"s3://{s3_bucket}/run/_listing/abc/") for part, _ in spilled.parts)
    read = read_all(ListingDatasource(spilled, rows=50))
    assert read.column("uri").to_pylist() == uris[:5] + uris[6:]
    spilled.remove()
    import pyarrow.fs as pafs

    from factory.io import uris as uri_helpers

    filesystem, path = uri_helpers.filesystem(folder)
    assert filesystem.get_file_info(path).type == pafs.FileType.NotFound
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1")
