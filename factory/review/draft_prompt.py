"""The exact prompt a draft caption answered, rebuilt from its caption row at export.

A draft is either a first-pass caption (a caption template whose {auxiliary} slot held
the experts' notes and the catalogue record, unless the style withholds the catalogue) or
the expanded caption (expand_answer: the first-pass caption and the expansion questions).
Preference training must see the prompt the model saw, not the bare template. The export
writes each item's prompt to `prompts.jsonl` beside the review file (machine data, kept
out of what the reviewer reads and edits), and `review import` puts it into each pair.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from factory.io import uris
from factory.prompts import load_prompt
from factory.prompts.fusion import AUXILIARY_COLUMNS, auxiliary_block

PROMPTS_FILE = "prompts.jsonl"
EXPAND_ANSWER = "expand_answer"
# what a draft's prompt is rebuilt from, besides the first-pass caption of its style
PROMPT_COLUMNS = (*AUXILIARY_COLUMNS, "expansion_questions")


@dataclass(frozen=True)
class CaptionPromptSettings:
    """The caption stage settings that shaped the {auxiliary} slot (from run.json)."""

    auxiliary: bool = True
    withhold_catalogue: tuple[str, ...] = field(default_factory=lambda: ("formal_analysis",))


def read_settings(run: str) -> CaptionPromptSettings:
    """The run's own caption settings; the defaults when run.json has none."""
    path = uris.join(run, "run.json")
    if uris.size_of(path) is None:
        return CaptionPromptSettings()
    caption = (json.loads(uris.read_bytes(path)).get("config") or {}).get("caption") or {}
    defaults = CaptionPromptSettings()
    return CaptionPromptSettings(
        auxiliary=caption.get("auxiliary", defaults.auxiliary),
        withhold_catalogue=tuple(caption.get("withhold_catalogue", defaults.withhold_catalogue)),
    )


def draft_prompt(row: dict[str, Any], settings: CaptionPromptSettings) -> str | None:
    """The rendered prompt of the row's draft; None when its template is unknown."""
    lineage = row.get("draft_caption_lineage") or {}
    template_id, style = lineage.get("prompt_template"), row.get("draft_style")
    if not template_id:
        return None
    template = load_prompt(template_id)
    if template.name == EXPAND_ANSWER:
        questions = [q["question"] for q in row.get("expansion_questions") or []]
        return template.render(caption=row.get(f"caption_{style}"), questions=_numbered(questions))
    return template.render(auxiliary=_auxiliary(row, style, settings))


def _auxiliary(row: dict[str, Any], style: str | None, settings: CaptionPromptSettings) -> str:
    # the caption stage's own rule (CaptionStage._auxiliary)
    if not settings.auxiliary:
        return ""
    if style in settings.withhold_catalogue:
        row = {key: value for key, value in row.items() if key != "knowledge"}
    return auxiliary_block(row)


def _numbered(items: list[str]) -> str:
    # as factory.stage_kit.chat_step.numbered renders them for the expand_answer prompt
    return "\n".join(f"{i}. {item}" for i, item in enumerate(items, start=1))


def encode_prompts(prompts: dict[str, str]) -> bytes:
    """item id -> prompt, one JSON object per line."""
    lines = (json.dumps({"id": i, "prompt": p}, ensure_ascii=False) for i, p in prompts.items())
    return "".join(line + "\n" for line in lines).encode("utf-8")


def read_prompts(review_file: str) -> dict[str, str]:
    """The prompts file beside `review_file`: item id -> prompt; empty when there is none
    (an export made before prompts were recorded)."""
    path = uris.join(uris.parent(review_file), PROMPTS_FILE)
    if uris.size_of(path) is None:
        return {}
    text = uris.read_bytes(path).decode("utf-8")
    entries = (json.loads(line) for line in text.splitlines() if line.strip())
    return {entry["id"]: entry["prompt"] for entry in entries}
