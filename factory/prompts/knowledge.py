"""The catalogue record as a prompt's "world knowledge" block.

Title and creator reach the model only when `name_identities` is on: formal analysis
must not name them, or the model recognises the work and recites what it read about it
instead of describing what it sees.
"""

from __future__ import annotations

from typing import Any

KNOWLEDGE_FIELDS = ("title", "creator", "date", "medium", "museum", "collection", "description")
IDENTITY_FIELDS = ("title", "creator")


def knowledge_block(row: dict[str, Any], name_identities: bool) -> str | None:
    fields = [f for f in KNOWLEDGE_FIELDS if name_identities or f not in IDENTITY_FIELDS]
    values = {name: str(row.get(name) or "").strip() for name in fields}
    return "\n".join(f"- {name}: {value}" for name, value in values.items() if value) or None
