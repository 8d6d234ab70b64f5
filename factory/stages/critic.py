"""The sentence-level critic: each atomic fact judged against the image.

One call per fact (the VLM sees the image, the fact and the caption it came from), so a
long caption's facts batch well on vLLM. Verdicts: consistent, inconsistent, unverifiable;
`critic_score` is the share of judged facts that are consistent. Verdicts are decoded as
JSON under the verdict schema where the engine can constrain. A fact whose answer cannot
be parsed (or was cut off) keeps a null verdict with the reason; a caption none of whose
facts could be judged is rejected (`critic_truncated` when every answer was cut off).
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from factory import records
from factory.models.demo import DEMO_VLM
from factory.stage_kit.chat_step import LOOP_ACTOR, ChatStep, PromptedEngine, chat_step
from factory.stage_kit.contract import (
    Columns,
    Resources,
    Row,
    StageConfig,
    fixed_columns,
    map_batch,
)
from factory.stage_kit.step_call import Outcome, Structured, call_structured
from factory.text import schemas
from factory.text.fact_checks import as_check, critic_score, unjudged
from factory.text.parse import Verdict, parse_verdict

FACT_CHECK_TYPE = pa.list_(
    pa.struct(
        [
            pa.field("fact", pa.string()),
            pa.field("verdict", pa.string()),
            pa.field("reason", pa.string()),
            pa.field("correction", pa.string()),
        ]
    )
)


class CriticConfig(StageConfig):
    step: ChatStep = Field(
        default_factory=lambda: chat_step(DEMO_VLM, "critic", max_new_tokens=96),
        description="the VLM that judges each fact against the image",
    )
    max_text_chars: int = Field(
        schemas.DEFAULT_MAX_CHARS,
        ge=1,
        description="longest reason or correction the verdict schema allows",
    )
    resources: Resources = Field(default_factory=LOOP_ACTOR.model_copy)


class CriticStage:
    COLUMNS = Columns(
        stage="critic",
        needs=("image", "facts", "draft_caption"),
        adds={
            "fact_checks": FACT_CHECK_TYPE,
            "critic_score": pa.float64(),
            "critic_lineage": records.LINEAGE_TYPE,
        },
    )
    columns_for = fixed_columns(COLUMNS)

    def __init__(self, config: CriticConfig):
        self.config = config
        self.prompted = PromptedEngine(config.step)
        self.structured = Structured(
            name="critic",
            reply=schemas.verdict_reply(config.max_text_chars),
            to_value=schemas.to_verdict,
            lenient=parse_verdict,
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_batch(batch, self.COLUMNS, self._judge)

    def _judge(self, rows: list[Row]) -> list[Row | records.Rejection]:
        calls = [
            ({"fact": fact, "caption": row["draft_caption"]}, row["image"])
            for row in rows
            for fact in row["facts"]
        ]
        outcomes = iter(call_structured(self.prompted, calls, self.structured))
        return [self._score([(fact, next(outcomes)) for fact in row["facts"]]) for row in rows]

    def _score(self, answered: list[tuple[str, Outcome[Verdict]]]) -> Row | records.Rejection:
        checks = [checked(fact, outcome) for fact, outcome in answered]
        score = critic_score(checks)
        if score is None:
            detail = checks[0]["reason"] if checks else "the caption had no facts"
            finished = {outcome.completion.finish_reason for _, outcome in answered}
            cut = finished == {"length"}
            return records.Rejection("critic_truncated" if cut else "no_verdicts", detail)
        return {
            "fact_checks": checks,
            "critic_score": score,
            "critic_lineage": self.prompted.lineage,
        }


def checked(fact: str, outcome: Outcome[Verdict]) -> dict:
    """One fact check from a structured call's outcome."""
    if not outcome.ok:
        return unjudged(fact, outcome.rejection.detail)
    return as_check(fact, outcome.value)
