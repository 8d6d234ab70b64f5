import os

import pyarrow as pa

from factory import records
from factory.io.outputs import ShardWriter, existing_uris, read_output
from tests.helpers import listing


def writer(tmp_path):
    schema = records.captions_schema([pa.field("caption", pa.string())])
    return ShardWriter(str(tmp_path), schema, run_id="r1", factory_version="0")


def mixed_batch():
    table = listing(["a", "b", "c"])
    status = ["ok", "rejected", "duplicate"]
    table = table.set_column(2, "status", pa.array(status))
    table = table.set_column(3, "reject_stage", pa.array([None, "validate", None]))
    table = table.set_column(4, "reason", pa.array([None, "too_small", None]))
    table = table.set_column(6, "duplicate_of", pa.array([None, None, "a"]))
    table = table.set_column(7, "duplicate_kind", pa.array([None, None, "exact"]))
    table = table.append_column("caption", pa.array(["hello", None, None]))
    return table.append_column(records.TIMING_PREFIX + "validate", pa.array([0.5, 0.25, 0.25]))


def test_rows_split_by_status_with_summary(tmp_path):
    summary = writer(tmp_path)(mixed_batch()).to_pylist()[0]
    assert (summary["accepted"], summary["rejected"], summary["duplicates"]) == (1, 1, 1)
    assert summary["rejected_reasons"] == '{"validate/too_small": 1}'
    assert summary["stage_seconds"] == '{"validate": 1.0}'
    captions = read_output(str(tmp_path), "captions")
    assert captions.column("caption").to_pylist() == ["hello"]
    assert captions.column("run_id").to_pylist() == ["r1"]
    assert not any(c.startswith("_") for c in captions.column_names)
    rejected = read_output(str(tmp_path), "rejected")
    assert rejected.select(["uri", "stage", "reason"]).to_pylist() == [
        {"uri": "b", "stage": "validate", "reason": "too_small"}
    ]
    duplicates = read_output(str(tmp_path), "duplicates")
    assert duplicates.select(["uri", "duplicate_of", "kind"]).to_pylist() == [
        {"uri": "c", "duplicate_of": "a", "kind": "exact"}
    ]
    assert existing_uris(str(tmp_path)) == {"a", "b", "c"}


def test_rewriting_the_same_batch_does_not_duplicate_rows(tmp_path):
    write = writer(tmp_path)
    write(mixed_batch())
    write(mixed_batch())
    assert read_output(str(tmp_path), "captions").num_rows == 1
    assert len(os.listdir(tmp_path / "captions")) == 1


def test_uncommitted_temporary_files_are_invisible(tmp_path):
    writer(tmp_path)(mixed_batch())
    (tmp_path / "captions" / ".tmp-123-part-x.parquet").write_bytes(b"half a shard")
    assert read_output(str(tmp_path), "captions").num_rows == 1
    assert read_output(str(tmp_path), "nothing-here") is None
