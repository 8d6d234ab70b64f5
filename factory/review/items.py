"""The review file: one item per caption, as JSONL or CSV, written and read back.

    review.jsonl   one JSON object per line, fields in the order of `ReviewItem`
    review.csv     one row per item under a header; `fact_checks` and `health_flags` are
                   JSON text in their cells; UTF-8 with a byte-order mark so spreadsheet
                   programs do not garble accented names

A reviewer edits only `corrected_caption`. Reading is strict (unknown fields, wrong types
and repeated ids are errors naming the file and line) because a typo in a field name
would otherwise turn a correction into a silently skipped item.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from factory.io import uris
from factory.review.review_errors import MalformedReview

ReviewFormat = Literal["jsonl", "csv"]
REVIEW_FILES: dict[str, str] = {"jsonl": "review.jsonl", "csv": "review.csv"}
CSV_ENCODING = "utf-8-sig"
# list fields that travel as JSON text inside a CSV cell
JSON_CELLS = ("fact_checks", "health_flags")
# text fields where an empty CSV cell means "no value" (CSV cannot tell "" from null)
OPTIONAL_TEXT = ("image", "final_caption", "style", "prompt_template", "run_id")


class FactCheck(BaseModel):
    """One atomic fact of the draft and the critic's verdict on it."""

    model_config = ConfigDict(extra="forbid")

    fact: str | None = None
    verdict: str | None = None  # consistent | inconsistent | unverifiable | null
    reason: str | None = None
    correction: str | None = None


class HealthFlag(BaseModel):
    """A health-check finding on one field of the caption row."""

    model_config = ConfigDict(extra="forbid")

    field: str | None = None
    rule: str | None = None
    detail: str | None = None


class ReviewItem(BaseModel):
    """One caption to review. Field order is the order a reviewer reads them in."""

    model_config = ConfigDict(extra="forbid")

    id: str  # stable: the same draft of the same image gets the same id in every export
    image: str | None  # path relative to the review folder; None if the source was gone
    critic_score: float  # share of the draft's facts the critic judged consistent
    fact_checks: list[FactCheck]
    draft_caption: str  # what the critic judged; the reviewer corrects this one
    final_caption: str | None  # the machine rewrite, offered as a suggestion
    corrected_caption: str | None = ""  # the reviewer's caption; empty = no correction
    health_flags: list[HealthFlag] = []
    style: str | None
    prompt_template: str | None  # prompt template id of the draft, e.g. caption_fusion.v1
    uri: str  # the source image
    run_id: str | None


FIELDS = tuple(ReviewItem.model_fields)


@dataclass(frozen=True)
class ReadItem:
    line: int  # where the item starts in its file (1-based; a CSV header is line 1)
    item: ReviewItem


def encode(items: list[ReviewItem], format: ReviewFormat) -> bytes:
    if format == "jsonl":
        lines = (json.dumps(item.model_dump(mode="json"), ensure_ascii=False) for item in items)
        return "".join(line + "\n" for line in lines).encode("utf-8")
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=FIELDS)
    writer.writeheader()
    for item in items:
        row = item.model_dump(mode="json")
        for name in JSON_CELLS:
            row[name] = json.dumps(row[name], ensure_ascii=False)
        writer.writerow({name: "" if value is None else value for name, value in row.items()})
    return buffer.getvalue().encode(CSV_ENCODING)


def find_review_file(review: str) -> str:
    """The review file in a review folder, or `review` itself when it names one."""
    if review.endswith(tuple(f".{format}" for format in REVIEW_FILES)):
        if uris.size_of(review) is None:
            raise FileNotFoundError(f"no review file at {review}")
        return review
    found = [uris.join(review, name) for name in REVIEW_FILES.values()]
    found = [uri for uri in found if uris.size_of(uri) is not None]
    if not found:
        names = " or ".join(REVIEW_FILES.values())
        raise FileNotFoundError(f"no {names} in {review}: is it a `factory review export` folder?")
    if len(found) > 1:
        raise MalformedReview(f"{review} holds both {' and '.join(found)}; keep the one you edited")
    return found[0]


def read_review(path: str) -> list[ReadItem]:
    """Every item of a review file, checked; raises MalformedReview naming file and line."""
    data = uris.read_bytes(path)
    if path.endswith(".csv"):
        read = _read_csv(path, _decode(path, data, CSV_ENCODING))
    else:
        read = _read_jsonl(path, _decode(path, data, "utf-8"))
    first_line: dict[str, int] = {}
    for entry in read:
        earlier = first_line.setdefault(entry.item.id, entry.line)
        if earlier != entry.line:
            raise MalformedReview(
                f"{path}, line {entry.line}: id {entry.item.id!r} repeats the item at line "
                f"{earlier}; each caption may appear once"
            )
    return read


def _decode(path: str, data: bytes, encoding: str) -> str:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise MalformedReview(
            f"{path}, line {line}: not UTF-8 text ({error.reason}); save the file as UTF-8"
        ) from None


def _read_jsonl(path: str, text: str) -> list[ReadItem]:
    read = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():  # editors add blank lines; they hold no item
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise MalformedReview(f"{path}, line {number}: not valid JSON ({error.msg})") from None
        read.append(ReadItem(number, _validate(path, number, value)))
    return read


def _read_csv(path: str, text: str) -> list[ReadItem]:
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = reader.fieldnames or []
    except csv.Error as error:
        raise MalformedReview(f"{path}, line 1: unreadable CSV header ({error})") from None
    missing = [name for name in FIELDS if name not in header]
    if missing:
        raise MalformedReview(f"{path}, line 1: the header lacks columns {missing}")
    read = []
    start = reader.line_num + 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return read
        except csv.Error as error:
            raise MalformedReview(f"{path}, line {start}: unreadable CSV ({error})") from None
        if None in row or None in row.values():
            raise MalformedReview(
                f"{path}, line {start}: {len(header)} columns expected, the row has a "
                f"different number"
            )
        read.append(ReadItem(start, _validate(path, start, _from_cells(path, start, row))))
        start = reader.line_num + 1


def _from_cells(path: str, line: int, row: dict[str, str]) -> dict:
    """A CSV row as the JSON object the same item has in JSONL."""
    value: dict = dict(row)
    for name in OPTIONAL_TEXT:
        if name in value and value[name] == "":
            value[name] = None
    for name in JSON_CELLS:
        if name not in value:
            continue
        try:
            value[name] = json.loads(value[name]) if value[name].strip() else []
        except json.JSONDecodeError as error:
            raise MalformedReview(
                f"{path}, line {line}: column {name} is not valid JSON ({error.msg})"
            ) from None
    return value


def _validate(path: str, line: int, value: object) -> ReviewItem:
    if not isinstance(value, dict):
        raise MalformedReview(f"{path}, line {line}: expected a JSON object, got {value!r:.60}")
    try:
        return ReviewItem.model_validate(value)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem['loc']) or 'item'}: {problem['msg']}"
            for problem in error.errors()
        )
        raise MalformedReview(f"{path}, line {line}: {problems}") from None
