"""Health checks on every generated caption (the DEArt rules plus mode-collapse loops).

Each text column gets its flags (rule code + detail) in `health_flags`; the rules that
appear in `reject_on` reject the record with the rule as its reason, the rest only flag.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from factory import records
from factory.stage_kit.contract import CHEAP_TASKS, Columns, Resources, Row, StageConfig, map_rows
from factory.text.health import HealthRules, check_text

FLAGS_TYPE = pa.list_(
    pa.struct(
        [
            pa.field("field", pa.string()),
            pa.field("rule", pa.string()),
            pa.field("detail", pa.string()),
        ]
    )
)
CAPTION_PREFIX = "caption_"
REFINED_COLUMNS = ("expanded_caption", "final_caption")


class HealthConfig(StageConfig):
    rules: HealthRules = Field(default_factory=HealthRules)
    reject_on: list[str] = Field(
        default_factory=lambda: ["too_short", "repetition", "title_leak", "creator_leak"],
        description="rule codes that reject the record; other flags are only recorded",
    )
    resources: Resources = Field(default_factory=lambda: CHEAP_TASKS.model_copy())


def text_style(column: str, row: Row) -> str:
    """The caption style whose rules apply to a text column."""
    if column.startswith(CAPTION_PREFIX):
        return column[len(CAPTION_PREFIX) :]
    return row.get("draft_style") or "detailed"


class HealthStage:
    @staticmethod
    def columns_for(config: HealthConfig, text_columns: tuple[str, ...]) -> Columns:
        return Columns(
            stage="health",
            needs=text_columns,
            optional=("title", "creator", "draft_style"),
            adds={"health_flags": FLAGS_TYPE},
        )

    def __init__(self, config: HealthConfig, text_columns: tuple[str, ...]):
        self.config = config
        self.text_columns = text_columns
        self.columns = self.columns_for(config, text_columns)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_rows(batch, self.columns, self._check)

    def _check(self, row: Row) -> Row:
        flags = []
        for column in self.text_columns:
            if not row.get(column):
                continue
            found = check_text(
                row[column],
                text_style(column, row),
                self.config.rules,
                title=row.get("title"),
                creator=row.get("creator"),
            )
            flags.extend({"field": column, "rule": f.rule, "detail": f.detail} for f in found)
        for flag in flags:
            if flag["rule"] in self.config.reject_on:
                raise records.RejectRecord(flag["rule"], f"{flag['field']}: {flag['detail']}")
        return {"health_flags": flags}


def text_columns(adds: dict[str, pa.DataType]) -> tuple[str, ...]:
    """The generated caption columns among what earlier stages added."""
    return tuple(
        name
        for name, dtype in adds.items()
        if dtype == pa.string() and (name.startswith(CAPTION_PREFIX) or name in REFINED_COLUMNS)
    )
