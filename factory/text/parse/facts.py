"""Atomic facts from a decomposition reply."""

from __future__ import annotations

import re

from factory.text.normalise import fold, snippet, strip_inline_markdown
from factory.text.parse.items import _ITEM_KEYS, _items, _json_list, _json_strings, _strip_quotes
from factory.text.parse.parse_errors import ParseError, _require_text

_FACT_LABEL = re.compile(r"^(?:atomic\s+)?(?:fact|statement|claim)\s*\d*\s*[:.\-]\s*", re.I)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(]?[A-Z0-9])")


def parse_facts(text: str) -> list[str]:
    """Atomic facts, one per item, numbering stripped, empty and repeated ones dropped.

    A reply that ignored the list format and wrote prose is split into sentences.
    """
    prepared = _require_text(text)
    value = _json_list(prepared)
    candidates: list[str] = []
    if value is not None:
        candidates = _json_strings(value, ("fact", "statement", "claim", *_ITEM_KEYS))
    else:
        for item in _items(prepared):
            if item.marked:
                candidates.append(item.text)
            else:
                candidates.extend(_SENTENCE_END.split(item.text))
    facts: list[str] = []
    seen: set[str] = set()
    for candidate in candidates:
        fact = _strip_quotes(_FACT_LABEL.sub("", strip_inline_markdown(candidate)).strip())
        key = " ".join(re.findall(r"\w+", fold(fact)))
        if not key or key in seen or (fact.endswith(":") and len(fact.split()) <= 8):
            continue
        seen.add(key)
        facts.append(fact)
    if not facts:
        raise ParseError("no_facts", f"no facts in {snippet(text)}")
    return facts
