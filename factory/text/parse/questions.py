"""Questions, each with the dimension it was asked along."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from factory.text.labels import match_label
from factory.text.normalise import fold, snippet, strip_inline_markdown
from factory.text.parse.items import _field, _is_chatter, _items, _json_list, _tagged
from factory.text.parse.parse_errors import ParseError, Question, _require_text

_QUESTION_KEYS = ("question", "q", "text", "query")
_DIMENSION_KEYS = ("dimension", "dim", "aspect", "category", "tag", "type")


def parse_questions(text: str, dimensions: Sequence[str]) -> list[Question]:
    """Questions with the dimension each was asked along (None when it names none given).

    A dimension may tag the question ("[spatial layout] Where...", "Spatial layout: Where...",
    "Where...? (spatial layout)") or head a group of questions.
    """
    prepared = _require_text(text)
    value = _json_list(prepared)
    if value is not None:
        questions = _json_questions(value, dimensions)
    else:
        questions = list(_line_questions(prepared, dimensions))
    unique: list[Question] = []
    seen: set[str] = set()
    for question in questions:
        key = " ".join(re.findall(r"\w+", fold(question.question)))
        if key and key not in seen:
            seen.add(key)
            unique.append(question)
    if not unique:
        raise ParseError("no_questions", f"no questions in {snippet(text)}")
    return unique


def _json_questions(value: Any, dimensions: Sequence[str]) -> list[Question]:
    if value is None:
        return []
    if isinstance(value, dict):
        by_dimension = {key: v for key, v in value.items() if match_label(key, dimensions)}
        if by_dimension:  # {"spatial layout": ["...", "..."], ...}
            out = []
            for key, asked in by_dimension.items():
                for question in asked if isinstance(asked, list) else [asked]:
                    if isinstance(question, str) and question.strip():
                        out.append(Question(match_label(key, dimensions), question.strip()))
            return out
        lists = [v for v in value.values() if isinstance(v, list)]
        return _json_questions(lists[0], dimensions) if len(lists) == 1 else []
    if not isinstance(value, list):
        return []
    out = []
    for element in value:
        if isinstance(element, str):
            dimension, question, _ = _tagged(strip_inline_markdown(element), dimensions)
            out.append(Question(dimension, question))
        elif isinstance(element, dict):
            question = _field(element, _QUESTION_KEYS)
            if isinstance(question, str) and question.strip():
                named = _field(element, _DIMENSION_KEYS)
                dimension = match_label(str(named), dimensions) if named else None
                out.append(Question(dimension, question.strip()))
    return [q for q in out if q.question]


def _line_questions(text: str, dimensions: Sequence[str]) -> Iterator[Question]:
    section: str | None = None
    section_from: str | None = None  # the header that set `section`
    for item in _items(text):
        if item.header != section_from:
            section_from = item.header
            section = match_label(item.header, dimensions)
        dimension, question, had_tag = _tagged(item.text, dimensions)
        # "1. **Spatial layout**" heading a group of numbered questions
        short = "?" not in question and len(question.split()) <= 5 and question[-1:] != "."
        heading = match_label(question, dimensions) if short and not had_tag else None
        if heading:
            section = heading
            continue
        # a marked item may be an instruction ("Describe the light."); a bare line must ask
        if (
            _is_chatter(question)
            or "?" not in question
            and (not item.marked or len(question.split()) < 3)
        ):
            continue
        # "Colour: what colour is the sky?" leaves a lower-case question behind its tag
        question = question[:1].upper() + question[1:]
        yield Question(dimension if had_tag else section, question)
