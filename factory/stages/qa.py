"""Museum question-answer pairs per image, one per catalogue category (MUSEUM-65).

Questions the image cannot answer (title, creator, collection, ...) are answered
"cannot tell from the image": that is the correct answer, and the fine-tuned models learn it.
"""

from __future__ import annotations

from dataclasses import asdict
from functools import partial

import pyarrow as pa
from pydantic import Field

from factory import records
from factory.models.demo import DEMO_VLM
from factory.prompts.fusion import AUXILIARY_COLUMNS, auxiliary_block
from factory.stage_kit.chat_step import LOOP_ACTOR, ChatStep, PromptedEngine, chat_step
from factory.stage_kit.contract import (
    Columns,
    Resources,
    Row,
    StageConfig,
    fixed_columns,
    map_batch,
)
from factory.stage_kit.step_call import Structured, call_structured
from factory.text import schemas
from factory.text.labels import QA_CATEGORIES
from factory.text.parse import parse_qa

QA_TYPE = pa.list_(
    pa.struct(
        [
            pa.field("category", pa.string()),
            pa.field("question", pa.string()),
            pa.field("answer", pa.string()),
        ]
    )
)


class QAConfig(StageConfig):
    step: ChatStep = Field(
        default_factory=lambda: chat_step(DEMO_VLM, "qa", max_new_tokens=256),
        description="the VLM that writes the pairs, and its prompt",
    )
    categories: list[str] = Field(
        default_factory=lambda: list(QA_CATEGORIES),
        description="question categories asked about every image",
        min_length=1,
    )
    auxiliary: bool = Field(
        False,
        description="show the experts' outputs in the prompt; off by default so answers "
        "come from the image, and unanswerable questions stay unanswerable",
    )
    max_text_chars: int = Field(
        schemas.DEFAULT_MAX_CHARS,
        ge=1,
        description="longest question or answer the reply schema allows (constrained "
        "decoding stops the text there)",
    )
    resources: Resources = Field(default_factory=LOOP_ACTOR.model_copy)


class QAStage:
    COLUMNS = Columns(
        stage="qa",
        needs=("image",),
        optional=AUXILIARY_COLUMNS,
        adds={"qa": QA_TYPE, "qa_lineage": records.LINEAGE_TYPE},
    )
    columns_for = fixed_columns(COLUMNS)

    def __init__(self, config: QAConfig):
        self.config = config
        self.prompted = PromptedEngine(config.step)
        categories = tuple(config.categories)
        self.structured = Structured(
            name="qa",
            reply=schemas.qa_reply(categories, config.max_text_chars),
            to_value=schemas.to_qa,
            lenient=partial(parse_qa, categories=categories),
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_batch(batch, self.COLUMNS, self._ask)

    def _ask(self, rows: list[Row]) -> list[Row | records.Rejection]:
        categories = ", ".join(self.config.categories)
        calls = [
            (
                {
                    "categories": categories,
                    "auxiliary": auxiliary_block(row) if self.config.auxiliary else "",
                },
                row["image"],
            )
            for row in rows
        ]
        return [
            {"qa": [asdict(pair) for pair in outcome.value], "qa_lineage": outcome.lineage}
            if outcome.ok
            else outcome.rejection
            for outcome in call_structured(self.prompted, calls, self.structured)
        ]
