"""Knowledge: the catalogue record as the captioner's "world knowledge" block, one column
per row (the block itself: factory.prompts.knowledge)."""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from factory import records
from factory.prompts.knowledge import knowledge_block
from factory.stage_kit.contract import (
    CHEAP_TASKS,
    Columns,
    Resources,
    Row,
    StageConfig,
    fixed_columns,
    map_rows,
)


class KnowledgeConfig(StageConfig):
    name_identities: bool = Field(
        True,
        description="let title and creator reach the captioner; off for formal analysis, "
        "where recognise-then-recite produces hallucinations",
    )
    resources: Resources = Field(default_factory=lambda: CHEAP_TASKS.model_copy())


class KnowledgeStage:
    COLUMNS = Columns(
        stage="knowledge", needs=records.CATALOGUE_COLUMNS, adds={"knowledge": pa.string()}
    )
    columns_for = fixed_columns(COLUMNS)

    def __init__(self, config: KnowledgeConfig):
        self.config = config

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_rows(batch, self.COLUMNS, self._knowledge)

    def _knowledge(self, row: Row) -> Row:
        return {"knowledge": knowledge_block(row, self.config.name_identities)}
