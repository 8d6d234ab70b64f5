"""The record schema shared by every stage and every output.

A row enters the pipeline as a listed input (`uri`, `input_index`, catalogue columns)
with `status="ok"`. A stage that cannot handle a row sets `status="rejected"` with the
stage name, a short `reason` code and a human-readable `detail`; dedup sets
`status="duplicate"`. Stages skip rows that are not ok, so every row reaches the writer
and lands in exactly one of captions/, rejected/ or duplicates/.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

OK = "ok"
REJECTED = "rejected"
DUPLICATE = "duplicate"

CATALOGUE_COLUMNS = (
    "object_id",
    "title",
    "creator",
    "date",
    "medium",
    "museum",
    "collection",
    "description",
)

# Columns every in-flight row carries from listing to writer.
TRACKING_FIELDS = [
    pa.field("uri", pa.string(), nullable=False),
    pa.field("input_index", pa.int64(), nullable=False),
    pa.field("status", pa.string(), nullable=False),
    pa.field("reject_stage", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("detail", pa.string()),
    pa.field("duplicate_of", pa.string()),
    pa.field("duplicate_kind", pa.string()),
]
CATALOGUE_FIELDS = [pa.field(name, pa.string()) for name in CATALOGUE_COLUMNS]
LISTING_SCHEMA = pa.schema(TRACKING_FIELDS + CATALOGUE_FIELDS)

# Lineage carried by every accepted row; per-text lineage lives beside each text column.
RUN_FIELDS = [pa.field("run_id", pa.string()), pa.field("factory_version", pa.string())]

REJECTED_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string()),
        pa.field("stage", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
        pa.field("input_index", pa.int64()),
        *RUN_FIELDS,
    ]
)

DUPLICATES_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string()),
        pa.field("duplicate_of", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("input_index", pa.int64()),
        *RUN_FIELDS,
    ]
)

# Lineage of one generated text: which model, engine and prompt made it.
LINEAGE_TYPE = pa.struct(
    [
        pa.field("model", pa.string()),
        pa.field("revision", pa.string()),
        pa.field("engine", pa.string()),
        pa.field("prompt_template", pa.string()),
        pa.field("prompt_sha256", pa.string()),
        # the LoRA adapter the text was generated with (null: the base model), and a content
        # hash of its weights
        pa.field("adapter", pa.string()),
        pa.field("adapter_revision", pa.string()),
        # why decoding ended: stop, or length (cut off at max_new_tokens)
        pa.field("finish_reason", pa.string()),
    ]
)

# Column-name prefix for per-row stage timings; dropped before writing.
TIMING_PREFIX = "_seconds_"

OUTPUT_DIRS = {OK: "captions", REJECTED: "rejected", DUPLICATE: "duplicates"}


def captions_schema(stage_fields: list[pa.Field]) -> pa.Schema:
    """The captions/ schema: identity, catalogue, what the stages added, run lineage."""
    identity = [pa.field("uri", pa.string()), pa.field("input_index", pa.int64())]
    return pa.schema(identity + CATALOGUE_FIELDS + stage_fields + RUN_FIELDS)


@dataclass(frozen=True)
class Rejection:
    """Why one record was rejected: a short `reason` code and a human-readable `detail`."""

    reason: str
    detail: str


class RejectRecord(Exception):  # noqa: N818 - a control-flow signal, not a crash
    """Raised by code that handles one record and finds it unusable."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.rejection = Rejection(reason, detail)


@dataclass(frozen=True)
class Duplicate:
    """Returned by dedup for a record that repeats an accepted one (`kind`: exact|near)."""

    of: str
    kind: str


def caption_column(style: str) -> str:
    """The column a caption style writes."""
    return f"caption_{style}"


def lineage_column(text_column: str) -> str:
    """The column holding where a text column's values came from."""
    return f"{text_column}_lineage"
