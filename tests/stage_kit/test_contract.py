import pyarrow as pa
import pytest

from factory import records
from factory.records import RejectRecord
from factory.stage_kit.contract import Columns, MissingColumnsError, map_batch, map_rows
from tests.helpers import listing

COLUMNS = Columns(stage="square", needs=("uri", "n"), adds={"square": pa.int64()}, drops=("n",))


def square(row):
    if row["n"] < 0:
        raise RejectRecord("negative", f"n is {row['n']}")
    if row["n"] == 13:
        raise ZeroDivisionError("unlucky")
    return {"square": row["n"] ** 2}


def test_rows_get_values_rejections_and_crashes_become_rows():
    table = listing(["a", "b", "c", "d"], n=[2, -1, 13, 5])
    out = map_rows(table, COLUMNS, square)
    assert out.num_rows == 4
    assert out.column("status").to_pylist() == ["ok", "rejected", "rejected", "ok"]
    assert out.column("square").to_pylist() == [4, None, None, 25]
    assert out.column("reason").to_pylist() == [None, "negative", "error", None]
    assert out.column("detail")[2].as_py() == "ZeroDivisionError: unlucky"
    assert out.column("reject_stage").to_pylist() == [None, "square", "square", None]
    assert "n" not in out.column_names
    assert out.schema.field("square").type == pa.int64()
    assert out.column(records.TIMING_PREFIX + "square").to_pylist()[0] >= 0


def test_rows_not_ok_pass_through_untouched():
    table = map_rows(listing(["a", "b"], n=[-1, 3]), COLUMNS.__class__("first", ("n",)), square)
    again = map_rows(table.append_column("m", pa.array([1, 1])), COLUMNS, lambda row: 1 / 0)
    assert again.column("reject_stage").to_pylist() == ["first", "square"]
    assert again.column("reason").to_pylist() == ["negative", "error"]


def test_missing_column_fails_loudly_at_entry():
    with pytest.raises(MissingColumnsError, match=r"needs columns \['n'\]"):
        map_rows(listing(["a"]), COLUMNS, square)


def test_batch_failure_isolates_the_poisonous_record():
    calls = []

    def batched(rows):
        calls.append(len(rows))
        if any(row["n"] == 13 for row in rows):
            raise RuntimeError("engine choked")
        return [{"square": row["n"] ** 2} for row in rows]

    out = map_batch(listing(["a", "b", "c"], n=[1, 13, 3]), COLUMNS, batched)
    assert calls == [3, 1, 1, 1]
    assert out.column("status").to_pylist() == ["ok", "rejected", "ok"]
    assert out.column("square").to_pylist() == [1, None, 9]
    assert "engine choked" in out.column("detail")[1].as_py()


def test_batch_returning_wrong_count_is_retried_row_by_row():
    seen = []

    def first_only(rows):
        seen.append(len(rows))
        return [{"square": rows[0]["n"] * 10}]

    out = map_batch(listing(["a", "b"], n=[1, 2]), COLUMNS, first_only)
    assert seen == [2, 1, 1]
    assert out.column("square").to_pylist() == [10, 20]
    nothing = map_batch(listing(["a"], n=[1]), COLUMNS, lambda rows: [])
    assert nothing.column("status").to_pylist() == ["rejected"]
