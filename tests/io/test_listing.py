import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from factory import records
from factory.io import uris
from factory.io.listing import ListingError, ListingScan, list_inputs


def touch(path, data=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def test_folder_is_listed_recursively_sorted_and_filtered(tmp_path):
    for name in ["b.jpg", "a.PNG", "sub/deep/c.webp", "notes.txt", ".hidden.jpg", ".git/x.jpg"]:
        touch(str(tmp_path / name))
    listing = list_inputs(str(tmp_path))
    names = [os.path.relpath(u, tmp_path) for u in listing.table.column("uri").to_pylist()]
    assert names == ["a.PNG", "b.jpg", "sub/deep/c.webp"]
    assert listing.table.column("input_index").to_pylist() == [0, 1, 2]
    assert listing.ignored_files == 1
    assert listing.table.schema == records.LISTING_SCHEMA


def test_names_with_spaces_and_undecodable_bytes_round_trip(tmp_path):
    touch(str(tmp_path / "with space.jpg"), b"one")
    touch(os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg"), b"two")
    listed = list_inputs(str(tmp_path)).table.column("uri").to_pylist()
    assert any(u.startswith("file://") and u.endswith("caf%E9.jpg") for u in listed)
    assert sorted(uris.read_bytes(u) for u in listed) == [b"one", b"two"]


def test_manifest_formats_carry_catalogue_and_resolve_relative_paths(tmp_path):
    touch(str(tmp_path / "img" / "a.jpg"))
    rows = [
        {"uri": "img/a.jpg", "object_id": "00123", "title": "Harvest", "extra": "x"},
        {"uri": "", "object_id": "00124", "title": "Missing"},
    ]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    csv_text = "uri,object_id,title\nimg/a.jpg,00123,Harvest\n,00124,Missing\n"
    (tmp_path / "m.csv").write_text(csv_text)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    for name in ["m.jsonl", "m.csv", "m.parquet"]:
        table = list_inputs(str(tmp_path / name)).table
        assert table.column("uri")[0].as_py() == str(tmp_path / "img" / "a.jpg")
        assert table.column("object_id").to_pylist() == ["00123", "00124"], name
        assert table.column("title").to_pylist() == ["Harvest", "Missing"]
        assert table.column("status").to_pylist() == ["ok", "rejected"]
        assert table.column("reason")[1].as_py() == "missing_uri"


def test_manifest_of_absolute_uris_is_trimmed_and_blank_rows_are_rejected(tmp_path):
    csv_text = 'uri,title\n /data/a.jpg ,A\ns3://bucket/b.jpg,B\n"   ",C\n'
    (tmp_path / "m.csv").write_text(csv_text)
    table = list_inputs(str(tmp_path / "m.csv")).table
    assert table.column("uri").to_pylist() == ["/data/a.jpg", "s3://bucket/b.jpg", ""]
    assert table.column("status").to_pylist() == ["ok", "ok", "rejected"]
    assert table.column("reason").to_pylist() == [None, None, "missing_uri"]
    assert table.column("title").to_pylist() == ["A", "B", "C"]
    assert table.column("input_index").to_pylist() == [0, 1, 2]


def test_listing_errors_are_specific(tmp_path):
    with pytest.raises(ListingError, match="does not exist"):
        list_inputs(str(tmp_path / "nope"))
    (tmp_path / "m.csv").write_text("path\na.jpg\n")
    with pytest.raises(ListingError, match="no 'uri' column"):
        list_inputs(str(tmp_path / "m.csv"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ListingError, match="no input images"):
        list_inputs(str(tmp_path / "empty"))


def test_a_folder_streams_in_batches_in_the_order_sorting_its_paths_gives(tmp_path):
    names = ["b.jpg", "b/a.jpg", "b.c/x.jpg", "a-z.jpg", "a/z/z.jpg", "a/b.jpg", "ab.jpg"]
    names += [f"many/{i:03d}.jpg" for i in range(20)] + ["many/skip.txt"]
    for name in names:
        touch(str(tmp_path / name))
    scan = ListingScan(str(tmp_path), batch_rows=8)
    tables = list(scan)
    assert [t.num_rows for t in tables] == [8, 8, 8, 3]
    listed = [u for t in tables for u in t.column("uri").to_pylist()]
    assert listed == sorted(str(tmp_path / n) for n in names if n.endswith(".jpg"))
    indexes = [i for t in tables for i in t.column("input_index").to_pylist()]
    assert indexes == list(range(27))
    assert scan.ignored_files == 1


@pytest.mark.parametrize("name", ["m.csv", "m.jsonl", "m.parquet"])
def test_a_manifest_streams_in_batches_with_one_index_sequence(tmp_path, name):
    rows = [{"uri": f"img/{i}.jpg", "object_id": f"{i:05d}"} for i in range(3000)]
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_text("uri,object_id\n" + "".join(f"{r['uri']},{r['object_id']}\n" for r in rows))
    elif name.endswith(".jsonl"):
        path.write_text("\n".join(json.dumps(r) for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=1000)
    tables = list(ListingScan(str(path), batch_rows=1000))
    whole = pa.concat_tables(tables)
    assert whole.column("input_index").to_pylist() == list(range(3000))
    assert whole.column("object_id")[2999].as_py() == "02999"
    assert whole.column("uri")[0].as_py() == str(tmp_path / "img" / "0.jpg")
    if name.endswith(".parquet"):  # text manifests parse in ~1 MB blocks, not row counts
        assert [t.num_rows for t in tables] == [1000] * 3


def test_a_manifest_that_is_not_what_its_name_says_is_a_listing_error(tmp_path):
    (tmp_path / "m.jsonl").write_text('{"uri": "a.jpg"}\nnot json\n')
    with pytest.raises(ListingError, match="cannot be parsed"):
        list_inputs(str(tmp_path / "m.jsonl"))
    pq.write_table(pa.table({"path": ["a.jpg"]}), tmp_path / "m.parquet")
    with pytest.raises(ListingError, match="no 'uri' column"):
        list_inputs(str(tmp_path / "m.parquet"))
    (tmp_path / "h.csv").write_text("uri,title\n")
    with pytest.raises(ListingError, match="has no rows"):
        list_inputs(str(tmp_path / "h.csv"))


def test_a_linked_folder_is_not_followed(tmp_path):
    touch(str(tmp_path / "art" / "a.jpg"))
    os.symlink(tmp_path / "art", tmp_path / "art" / "loop")
    listed = list_inputs(str(tmp_path)).table.column("uri").to_pylist()
    assert listed == [str(tmp_path / "art" / "a.jpg")]


def test_a_csv_manifest_with_a_byte_order_mark_and_crlf_lines_keeps_its_ids(tmp_path):
    (tmp_path / "m.csv").write_bytes(
        b"\xef\xbb\xbfuri,object_id,title\r\n/a/1.jpg,00123,T\r\n/a/2.jpg,00124,U\r\n"
    )
    table = list_inputs(str(tmp_path / "m.csv")).table
    assert table.column("uri").to_pylist() == ["/a/1.jpg", "/a/2.jpg"]
    assert table.column("object_id").to_pylist() == ["00123", "00124"]
    assert table.column("title").to_pylist() == ["T", "U"]


def test_an_s3_prefix_is_walked_a_folder_at_a_time_in_key_order(s3_bucket):
    import boto3

    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    keys = ["in/b.jpg", "in/b/a.jpg", "in/a-z.jpg", "in/a/z/z.jpg", "in/ab.jpg", "in/n.txt"]
    hidden = ["in/.cache/x.jpg", "in/a/.thumb.jpg", "elsewhere/c.jpg"]
    for key in keys + hidden:
        s3.put_object(Bucket=s3_bucket, Key=key, Body=b"x")
    scan = ListingScan(f"s3://{s3_bucket}/in/", batch_rows=2)
    tables = list(scan)
    listed = [u for t in tables for u in t.column("uri").to_pylist()]
    assert listed == sorted(f"s3://{s3_bucket}/{k}" for k in keys if k.endswith(".jpg"))
    assert [t.num_rows for t in tables] == [2, 2, 1]
    assert scan.ignored_files == 1
    with pytest.raises(ListingError, match="no input images"):
        list(ListingScan(f"s3://{s3_bucket}/missing"))
