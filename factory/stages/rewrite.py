"""The rewrite: the draft caption fixed from the critic's verdicts.

A draft whose facts were all judged consistent needs no rewrite and costs no call: its
final caption is the draft, with the draft's lineage.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from factory import records
from factory.models.demo import DEMO_TEXT_LLM
from factory.stage_kit.chat_step import LOOP_ACTOR, ChatStep, PromptedEngine, chat_step
from factory.stage_kit.contract import (
    Columns,
    Resources,
    Row,
    StageConfig,
    fixed_columns,
    map_batch,
)
from factory.stage_kit.step_call import call_text
from factory.text.fact_checks import needs_rewrite, verdict_lines


class RewriteConfig(StageConfig):
    step: ChatStep = Field(
        default_factory=lambda: chat_step(DEMO_TEXT_LLM, "rewrite", max_new_tokens=200),
        description="the (text) LLM that rewrites the caption from the verdicts",
    )
    resources: Resources = Field(default_factory=LOOP_ACTOR.model_copy)


class RewriteStage:
    COLUMNS = Columns(
        stage="rewrite",
        needs=("draft_caption", "draft_caption_lineage", "fact_checks"),
        adds={"final_caption": pa.string(), "final_caption_lineage": records.LINEAGE_TYPE},
    )
    columns_for = fixed_columns(COLUMNS)

    def __init__(self, config: RewriteConfig):
        self.config = config
        self.prompted = PromptedEngine(config.step)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_batch(batch, self.COLUMNS, self._rewrite)

    def _rewrite(self, rows: list[Row]) -> list[Row | records.Rejection]:
        results: list[Row | records.Rejection] = [
            {
                "final_caption": row["draft_caption"],
                "final_caption_lineage": row["draft_caption_lineage"],
            }
            for row in rows
        ]
        todo = [i for i, row in enumerate(rows) if needs_rewrite(row["fact_checks"])]
        calls = [
            (
                {
                    "caption": rows[i]["draft_caption"],
                    "verdicts": verdict_lines(rows[i]["fact_checks"]),
                },
                None,
            )
            for i in todo
        ]
        for i, outcome in zip(todo, call_text(self.prompted, calls, "rewrite"), strict=True):
            results[i] = (
                {"final_caption": outcome.value, "final_caption_lineage": outcome.lineage}
                if outcome.ok
                else outcome.rejection
            )
        return results
