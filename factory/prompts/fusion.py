"""The "visual auxiliary information" block of the fusion caption prompt.

Expert outputs (category, boxes, OCR lines, tags, catalogue knowledge) are rendered as
compact text the captioner can ground its description in, e.g.
    objects: horse[0.15, 0.42, 0.28, 0.85], boat[0.50, 0.10, 0.95, 0.60]
Every part is optional: a run without an expert simply has no line for it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# columns the block reads when a batch has them
AUXILIARY_COLUMNS = ("category", "category_score", "objects", "ocr", "tags", "knowledge")


def box_text(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{value:.2f}" for value in box) + "]"


def auxiliary_block(row: Mapping[str, Any], max_items: int = 20) -> str:
    lines = []
    if row.get("category"):
        score = row.get("category_score")
        lines.append(f"- category: {row['category']}" + (f" ({score:.2f})" if score else ""))
    if objects := row.get("objects"):
        located = (f"{o['label']}{box_text(o['box'])}" for o in objects[:max_items])
        lines.append("- objects: " + ", ".join(located))
    if ocr := row.get("ocr"):
        texts = (f'"{line["text"]}" at {box_text(line["box"])}' for line in ocr[:max_items])
        lines.append("- text in the image: " + "; ".join(texts))
    if tags := row.get("tags"):
        lines.append("- tags: " + ", ".join(tag["label"] for tag in tags[:max_items]))
    parts = []
    if lines:
        parts.append(
            "Visual auxiliary information (from tools; may be wrong):\n" + "\n".join(lines)
        )
    if row.get("knowledge"):
        parts.append("Catalogue record (may be incomplete; trust the image):\n" + row["knowledge"])
    return "\n\n".join(parts)
