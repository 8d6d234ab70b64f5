"""Knowledge: the catalogue record as the captioner's "world knowledge" block.

Title and creator reach the model only when `name_identities` is on: formal analysis
must not name them, or the model recognises the work and recites what it read about it
instead of describing what it sees.
"""

from __future__ import annotations

import pyarrow as pa
from pydantic import Field

from factory import records
from factory.stages.base import CHEAP_TASKS, Columns, Resources, Row, StageConfig, map_rows

KNOWLEDGE_FIELDS = ("title", "creator", "date", "medium", "museum", "collection", "description")
IDENTITY_FIELDS = ("title", "creator")


class KnowledgeConfig(StageConfig):
    name_identities: bool = Field(
        True,
        description="let title and creator reach the captioner; off for formal analysis, "
        "where recognise-then-recite produces hallucinations",
    )
    resources: Resources = Field(default_factory=lambda: CHEAP_TASKS.model_copy())


def knowledge_block(row: Row, name_identities: bool) -> str | None:
    fields = [f for f in KNOWLEDGE_FIELDS if name_identities or f not in IDENTITY_FIELDS]
    values = {name: str(row.get(name) or "").strip() for name in fields}
    return "\n".join(f"- {name}: {value}" for name, value in values.items() if value) or None


class KnowledgeStage:
    COLUMNS = Columns(
        stage="knowledge", needs=records.CATALOGUE_COLUMNS, adds={"knowledge": pa.string()}
    )

    def __init__(self, config: KnowledgeConfig):
        self.config = config

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_rows(batch, self.COLUMNS, self._knowledge)

    def _knowledge(self, row: Row) -> Row:
        return {"knowledge": knowledge_block(row, self.config.name_identities)}
