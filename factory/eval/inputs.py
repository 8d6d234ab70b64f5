"""Predictions and references for `factory eval`: Parquet (a file or a folder of shards)
or JSON Lines, local or s3://, keyed by an image id column.

Captions: a prediction table has one text per image (`caption`, `prediction` or the column
named); a reference table has several per image, either one row per caption or a list
column (`references`, `captions`). QA: both tables have `question` and `answer` (references
may hold an `answers` list, a `category` and an `answerable` flag).
"""

from __future__ import annotations

import io
from collections import defaultdict

import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from factory.eval.vqa import QAItem
from factory.io import uris

PREDICTION_COLUMNS = ("caption", "prediction", "final_caption", "text")
REFERENCE_COLUMNS = ("references", "captions", "reference", "caption", "text")


def read_table(uri: str) -> pa.Table:
    if uri.endswith((".jsonl", ".json", ".ndjson")):
        return pajson.read_json(io.BytesIO(uris.read_bytes(uri)))
    filesystem, path = uris.filesystem(uri)
    return pq.read_table(path, filesystem=filesystem)


def is_qa(table: pa.Table) -> bool:
    return {"question"} <= set(table.column_names) and (
        "answer" in table.column_names or "answers" in table.column_names
    )


def _column(table: pa.Table, wanted: str | None, candidates: tuple[str, ...], what: str) -> str:
    if wanted:
        if wanted not in table.column_names:
            raise ValueError(f"{what}: no column {wanted!r} (columns: {table.column_names})")
        return wanted
    for name in candidates:
        if name in table.column_names:
            return name
    raise ValueError(f"{what}: none of the columns {list(candidates)} in {table.column_names}")


def caption_predictions(
    table: pa.Table, id_column: str = "image_id", text_column: str | None = None
) -> dict[str, str]:
    ids = table.column(_column(table, id_column, (), "predictions")).to_pylist()
    texts = table.column(_column(table, text_column, PREDICTION_COLUMNS, "predictions"))
    found: dict[str, str] = {}
    for key, text in zip(ids, texts.to_pylist(), strict=True):
        if key is None or text is None:
            continue
        if str(key) in found:
            raise ValueError(f"predictions: image id {key!r} has more than one caption")
        found[str(key)] = text
    return found


def caption_references(
    table: pa.Table, id_column: str = "image_id", text_column: str | None = None
) -> dict[str, list[str]]:
    ids = table.column(_column(table, id_column, (), "references")).to_pylist()
    texts = table.column(_column(table, text_column, REFERENCE_COLUMNS, "references")).to_pylist()
    found: dict[str, list[str]] = defaultdict(list)
    for key, value in zip(ids, texts, strict=True):
        if key is None or value is None:
            continue
        values = value if isinstance(value, list) else [value]
        found[str(key)].extend(text for text in values if text)
    return dict(found)


def qa_items(table: pa.Table, id_column: str = "image_id") -> list[QAItem]:
    names = set(table.column_names)
    items = []
    for row in table.to_pylist():
        answers = row.get("answers") if "answers" in names else None
        answers = answers if answers else [row.get("answer") or ""]
        items.append(
            QAItem(
                image_id=str(row[_column(table, id_column, (), "qa")]),
                question=row["question"] or "",
                answers=tuple(answers),
                category=row.get("category") or "unknown",
                answerable=row.get("answerable"),
            )
        )
    return items
