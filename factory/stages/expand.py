"""8-dimension expansion: an LLM asks what the caption leaves open, the VLM answers it in.

Step one (text only) asks questions along the dimensions below about the caption; step
two shows the image, the caption and the questions to the captioner, which folds what it
can see into one longer caption. Questions are kept, tagged by dimension.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import partial

import pyarrow as pa
from pydantic import Field

from factory import records
from factory.models.demo import DEMO_TEXT_LLM, DEMO_VLM
from factory.stage_kit.chat_step import (
    LOOP_ACTOR,
    ChatStep,
    PromptedEngine,
    chat_step,
    numbered,
)
from factory.stage_kit.contract import Columns, Resources, Row, StageConfig, map_batch
from factory.stage_kit.step_call import Structured, call_structured, call_text
from factory.text import schemas
from factory.text.labels import QUESTION_DIMENSIONS
from factory.text.parse import parse_questions

QUESTIONS_TYPE = pa.list_(
    pa.struct([pa.field("dimension", pa.string()), pa.field("question", pa.string())])
)


class ExpandConfig(StageConfig):
    style: str = Field("detailed", description="which caption style is expanded")
    questions: ChatStep = Field(
        default_factory=lambda: chat_step(DEMO_TEXT_LLM, "expand_questions", max_new_tokens=160),
        description="the (text) LLM that asks the questions",
    )
    answer: ChatStep = Field(
        default_factory=lambda: chat_step(DEMO_VLM, "expand_answer", max_new_tokens=160),
        description="the VLM that answers them into a longer caption",
    )
    dimensions: list[str] = Field(
        default_factory=lambda: list(QUESTION_DIMENSIONS), description="what the questions cover"
    )
    max_questions: int = Field(
        8, ge=1, description="questions kept per caption (the most the reply schema allows)"
    )
    max_text_chars: int = Field(
        schemas.DEFAULT_MAX_CHARS, ge=1, description="longest question the reply schema allows"
    )
    resources: Resources = Field(default_factory=LOOP_ACTOR.model_copy)


class ExpandStage:
    @staticmethod
    def columns_for(config: ExpandConfig) -> Columns:
        return Columns(
            stage="expand",
            needs=("image", records.caption_column(config.style)),
            adds={
                "expansion_questions": QUESTIONS_TYPE,
                "expansion_questions_lineage": records.LINEAGE_TYPE,
                "expanded_caption": pa.string(),
                "expanded_caption_lineage": records.LINEAGE_TYPE,
            },
        )

    def __init__(self, config: ExpandConfig):
        self.config = config
        self.columns = self.columns_for(config)
        self.source = records.caption_column(config.style)
        self.asker = PromptedEngine(config.questions)
        self.answerer = PromptedEngine(config.answer)
        dimensions = tuple(config.dimensions)
        self.structured = Structured(
            name="questions",
            reply=schemas.questions_reply(dimensions, config.max_questions, config.max_text_chars),
            to_value=schemas.to_questions,
            lenient=partial(parse_questions, dimensions=dimensions),
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_batch(batch, self.columns, self._expand)

    def _expand(self, rows: list[Row]) -> list[Row | records.Rejection]:
        dimensions = numbered(self.config.dimensions)
        calls = [({"caption": row[self.source], "dimensions": dimensions}, None) for row in rows]
        results: list[Row | records.Rejection] = []
        for outcome in call_structured(self.asker, calls, self.structured):
            if not outcome.ok:
                results.append(outcome.rejection)
                continue
            kept = outcome.value[: self.config.max_questions]
            results.append(
                {
                    "expansion_questions": [asdict(q) for q in kept],
                    "expansion_questions_lineage": outcome.lineage,
                }
            )
        self._answer(rows, results)
        return results

    def _answer(self, rows: list[Row], results: list[Row | records.Rejection]) -> None:
        pending = [
            i for i, result in enumerate(results) if not isinstance(result, records.Rejection)
        ]
        calls = [
            (
                {
                    "caption": rows[i][self.source],
                    "questions": numbered(
                        [q["question"] for q in results[i]["expansion_questions"]]
                    ),
                },
                rows[i]["image"],
            )
            for i in pending
        ]
        for i, outcome in zip(pending, call_text(self.answerer, calls, "expanded"), strict=True):
            if not outcome.ok:
                results[i] = outcome.rejection
                continue
            results[i] |= {
                "expanded_caption": outcome.value,
                "expanded_caption_lineage": outcome.lineage,
            }
