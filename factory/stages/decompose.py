"""Atomic decomposition: the caption under review becomes independent, explicit facts.

The caption under review (the "draft") is the expanded caption when expansion ran, else
the first-pass caption of the style. It is kept as `draft_caption` with its lineage: it
is what the critic judges, what the rewrite fixes and what a human reviewer corrects.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from factory import records
from factory.models.demo import DEMO_TEXT_LLM
from factory.stage_kit.chat_step import LOOP_ACTOR, ChatStep, PromptedEngine, chat_step
from factory.stage_kit.contract import Columns, Resources, Row, StageConfig, map_batch
from factory.stage_kit.step_call import Structured, call_structured
from factory.text import schemas
from factory.text.parse import parse_facts

EXPANDED = "expanded_caption"


class DecomposeConfig(StageConfig):
    style: str = Field("detailed", description="which caption style is checked and rewritten")
    step: ChatStep = Field(
        default_factory=lambda: chat_step(DEMO_TEXT_LLM, "decompose", max_new_tokens=200),
        description="the (text) LLM that splits the caption into facts",
    )
    max_facts: int = Field(
        24,
        ge=1,
        description="facts kept per caption (each costs a critic call; the most the reply "
        "schema allows)",
    )
    max_text_chars: int = Field(
        schemas.DEFAULT_MAX_CHARS, ge=1, description="longest fact the reply schema allows"
    )
    resources: Resources = Field(default_factory=LOOP_ACTOR.model_copy)


class DecomposeStage:
    @staticmethod
    def columns_for(config: DecomposeConfig) -> Columns:
        source = records.caption_column(config.style)
        return Columns(
            stage="decompose",
            needs=(source, records.lineage_column(source)),
            optional=(EXPANDED, records.lineage_column(EXPANDED)),
            adds={
                "draft_caption": pa.string(),
                "draft_style": pa.string(),
                "draft_caption_lineage": records.LINEAGE_TYPE,
                "facts": pa.list_(pa.string()),
                "facts_lineage": records.LINEAGE_TYPE,
            },
        )

    def __init__(self, config: DecomposeConfig):
        self.config = config
        self.columns = self.columns_for(config)
        self.prompted = PromptedEngine(config.step)
        self.structured = Structured(
            name="facts",
            reply=schemas.facts_reply(config.max_facts, config.max_text_chars),
            to_value=schemas.to_facts,
            lenient=parse_facts,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_batch(batch, self.columns, self._decompose)

    def _draft(self, row: Row) -> tuple[str, dict]:
        if row.get(EXPANDED):
            return row[EXPANDED], row[records.lineage_column(EXPANDED)]
        source = records.caption_column(self.config.style)
        return row[source], row[records.lineage_column(source)]

    def _decompose(self, rows: list[Row]) -> list[Row | records.Rejection]:
        drafts = [self._draft(row) for row in rows]
        calls = [({"caption": text}, None) for text, _ in drafts]
        outcomes = call_structured(self.prompted, calls, self.structured)
        results: list[Row | records.Rejection] = []
        for (draft, lineage), outcome in zip(drafts, outcomes, strict=True):
            if not outcome.ok:
                results.append(outcome.rejection)
                continue
            results.append(
                {
                    "draft_caption": draft,
                    "draft_style": self.config.style,
                    "draft_caption_lineage": lineage,
                    "facts": outcome.value[: self.config.max_facts],
                    "facts_lineage": outcome.lineage,
                }
            )
        return results
