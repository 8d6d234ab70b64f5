"""Question-answer pairs, each under a category."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from factory.text.labels import match_label
from factory.text.normalise import fold, snippet, strip_inline_markdown
from factory.text.parse.items import (
    _HEADER,
    _RULE,
    _field,
    _json_list,
    _strip_marker,
    _strip_quotes,
    _tagged,
)
from factory.text.parse.parse_errors import CANNOT_TELL, ParseError, QAPair, _require_text

_CANNOT_TELL = re.compile(
    # "Unknown", "It is not visible", "The creator cannot be identified from the image"
    r"^(?:(?:it|this|that|the|its)\b(?:\s+\w+){0,3}?(?:\s+is|\s+are|'s)?\s+)?(?:"
    r"(?:cannot|can\s*not|can't|could\s*not|couldn't|unable\s+to|impossible\s+to"
    r"|not\s+possible\s+to)\s+(?:be\s+)?(?:tell|told|determin\w*|see|seen|know|known|identif\w*"
    r"|read|say|verif\w*|infer\w*|judg\w*)"
    r"|not\s+(?:visible|shown|clear|determinable|identifiable|legible|readable|known|evident"
    r"|apparent|discernible|indicated|stated|specified)"
    r"|unknown|unclear|undetermined|indeterminate|unidentified|n/?a\b|none\s+visible"
    r"|no\s+(?:visible|readable|legible|discernible)\b"
    r"|there\s+is\s+no\s+(?:visible|readable|legible|discernible)\b"
    r"|the\s+(?:image|picture|photo(?:graph)?)\s+(?:does\s+not|doesn't|cannot|can't)\s+"
    r"(?:show|reveal|indicate|tell|contain|say)"
    r"|(?:i\s+)?(?:cannot|can't|can\s+not)\s+tell"
    r")",
    re.IGNORECASE,
)
_PIPE_HEADER = {"category", "question", "answer", "q", "a", "categories"}
_QA_KEY = re.compile(
    r"^(?:\d{1,3}[.)]\s*|[-*\u2022]\s+)?[*_]*(?P<key>category|question|answer|q|a)\s*\d*"
    r"[*_]*\s*[:.)]\s*[*_]*\s*(?P<value>.*)$",
    re.IGNORECASE,
)
_ANSWER_LABEL = re.compile(r"^(?:a|answer)\s*:\s*", re.IGNORECASE)
_INLINE_ANSWER = re.compile(r"\s+(?:\*\*)?(?:a|answer)(?:\*\*)?\s*:\s*", re.IGNORECASE)


def normalise_answer(answer: str) -> str:
    """The answer, or CANNOT_TELL when it says the image does not show it."""
    answer = _strip_quotes(" ".join(strip_inline_markdown(answer).split()))
    return CANNOT_TELL if _CANNOT_TELL.match(answer) else answer


def parse_qa(text: str, categories: Sequence[str]) -> list[QAPair]:
    """Question-answer pairs, each under one of `categories`; pairs under no known category
    and pairs missing a question or an answer are dropped."""
    prepared = _require_text(text)
    value = _json_list(prepared)
    if value is not None:
        raw = _json_pairs(value, categories)
    else:
        raw = list(_line_pairs(prepared, categories))
    pairs: list[QAPair] = []
    seen: set[tuple[str, str]] = set()
    for category, question, answer in raw:
        label = match_label(category, categories)
        question = _strip_quotes(" ".join(strip_inline_markdown(question).split()))
        answer = normalise_answer(answer)
        key = (label or "", fold(question))
        if label and question and answer and key not in seen:
            seen.add(key)
            pairs.append(QAPair(label, question, answer))
    if not pairs:
        raise ParseError("no_pairs", f"no question-answer pairs in {snippet(text)}")
    return pairs


def _json_pairs(value: Any, categories: Sequence[str]) -> list[tuple[str, str, str]]:
    if value is None:
        return []
    if isinstance(value, dict):
        keyed = {key: v for key, v in value.items() if match_label(key, categories)}
        if keyed:  # {"material": {"question": ..., "answer": ...}, ...}
            out = []
            for key, pair in keyed.items():
                if isinstance(pair, dict):
                    out.extend(_json_pairs([{"category": key, **pair}], categories))
                elif isinstance(pair, list) and len(pair) == 2:
                    out.append((key, str(pair[0]), str(pair[1])))
            return out
        lists = [v for v in value.values() if isinstance(v, list)]
        return _json_pairs(lists[0], categories) if len(lists) == 1 else []
    out = []
    for element in value if isinstance(value, list) else []:
        if not isinstance(element, dict):
            continue
        category = _field(element, ("category", "cat", "field", "aspect"))
        question = _field(element, ("question", "q"))
        answer = _field(element, ("answer", "a", "response"))
        if category is not None and question is not None and answer is not None:
            out.append((str(category), str(question), str(answer)))
    return out


def _pipe_cells(line: str) -> list[str] | None:
    content, _ = _strip_marker(line)
    if content.count("|") < 1:
        return None
    cells = [strip_inline_markdown(cell).strip() for cell in content.strip().strip("|").split("|")]
    if all(re.fullmatch(r":?-{2,}:?", cell) or not cell for cell in cells):
        return []  # a markdown table's separator row
    if {fold(cell) for cell in cells} <= _PIPE_HEADER:
        return []  # its header row
    return cells


def _line_pairs(text: str, categories: Sequence[str]) -> Iterator[tuple[str, str, str]]:
    category: str | None = None
    question: str | None = None
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or _RULE.match(line):
            continue
        cells = _pipe_cells(line)
        if cells == []:
            continue
        if cells and len(cells) >= 3:
            yield cells[0], cells[1], " | ".join(cells[2:])
            continue
        if cells and len(cells) == 2 and category:
            yield category, cells[0], cells[1]
            continue
        if match := _QA_KEY.match(strip_inline_markdown(line)):
            key, value = match["key"].lower(), match["value"].strip()
            if key == "category":
                category, question = value.rstrip(":"), None
            elif key[0] == "q":
                # "Q: What is it made of? A: Wood." on one line
                parts = _INLINE_ANSWER.split(value, maxsplit=1)
                question = parts[0]
                if len(parts) == 2 and category:
                    yield category, parts[0], parts[1]
                    question = None
            elif question and category:
                yield category, question, value
                question = None
            continue
        plain = strip_inline_markdown(_HEADER.sub(lambda m: m["hash"] or m["bold"], line))
        content, _ = _strip_marker(plain)
        label, rest, had_tag = _tagged(content, categories)
        if had_tag and label:
            category, question = label, None
            # "[material] What is it made of? Wood." -- the answer follows the question mark
            asked, mark, answered = rest.partition("?")
            answered = _ANSWER_LABEL.sub("", answered.strip(" -\u2013\u2014:"))
            if mark and answered:
                yield label, asked + "?", answered
            elif mark:
                question = asked + "?"
        elif "?" not in content and (heading := match_label(content.rstrip(":"), categories)):
            category, question = heading, None
