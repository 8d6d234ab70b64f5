"""Pieces every parser reads replies with: list items, headings, JSON lists, tags, quotes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from factory.text.labels import match_label
from factory.text.lenient_json import find_json_spans
from factory.text.normalise import fold, snippet, strip_inline_markdown
from factory.text.parse.parse_errors import ParseError, _require_text

# ---------------------------------------------------------------------------- lines

_MARKER = re.compile(
    r"""^(?:
        [-*+\u2022\u00b7\u2023\u25e6\u25aa\u2013\u2014]\s+   # - * + bullets and dashes
      | \(\d{1,3}\)\s*                                      # (1)
      | \[\d{1,3}\]\s*                                      # [1]
      | \d{1,3}(?:\.\s+|[)\]:]\s*)                          # 1.  1)  1]  1:
      | (?:q|question|fact|f|item|step|\#)\s*\d{1,3}\s*[.):\-]?\s+   # Q1: Fact 2. #3
      | [a-z]\)\s+                                          # a)
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_HEADER = re.compile(r"^(?:#{1,6}\s+(?P<hash>.+?)\s*#*|(\*\*|__)(?P<bold>[^*]+?):?\2:?)$")
_RULE = re.compile(r"^(?:[-*_=]\s*){3,}$")
_CHATTER = re.compile(
    r"""^(?:
        (?:sure|certainly|of\ course|okay|ok|absolutely|great|alright|got\ it)\b
      | here(?:'s|\ is|\ are)\b
      | (?:below|following)\ (?:is|are)\b
      | the\ following\b
      | (?:i\ hope|hope\ this|let\ me\ know|feel\ free|please\ note|note:)
      | if\ you\ (?:need|want|have|would|'d)\b
      | is\ there\ anything\b
      | i(?:'ve|\ have)\ (?:listed|broken|split|provided|created|written|generated|kept)\b
      | these\ (?:are|questions|facts|pairs)\b
      | (?:i'm\ sorry|i\ am\ sorry|sorry,|i\ cannot|i\ can't|i\ am\ unable|as\ an\ ai)
      | (?:i'd|i\ would|i'm|i\ am)\ (?:be\ )?happy\ to\b | happy\ to\ help
    )""",
    re.IGNORECASE | re.VERBOSE,
)


@dataclass(frozen=True)
class _Item:
    text: str
    marked: bool  # carried a list marker (number, bullet)
    header: str | None  # the most recent heading above it


def _is_chatter(line: str) -> bool:
    return bool(_CHATTER.match(line))


def _strip_marker(line: str) -> tuple[str, bool]:
    for candidate in (line, strip_inline_markdown(line)):
        if match := _MARKER.match(candidate):
            return candidate[match.end() :].strip(), True
    return line, False


def _items(text: str) -> list[_Item]:
    """List items with their headings; unmarked lines count only when none is marked.

    Among marked items, a short unmarked line ("Spatial layout") heads the items below it.
    """
    items: list[_Item] = []
    header: str | None = None  # the last markdown or "Title:" heading
    loose_header: str | None = None  # that, or a later short unmarked line
    loose: list[str | None] = []  # loose_header of each item
    open_item = False  # a marked item that an unmarked next line may continue
    for raw in text.split("\n"):
        line = raw.strip()
        if not line or _RULE.match(line):
            open_item = False
            continue
        if heading := _HEADER.match(line):
            header = strip_inline_markdown(heading["hash"] or heading["bold"]).rstrip(":")
            loose_header = header
            open_item = False
            continue
        content, marked = _strip_marker(line)
        content = strip_inline_markdown(content)
        if not content:
            continue
        if marked:
            items.append(_Item(content, True, header))
            loose.append(loose_header)
            open_item = True
        elif content.endswith(":") and len(content.split()) <= 8:
            header = loose_header = content.rstrip(":").strip()
            open_item = False
        elif open_item and not _is_chatter(content) and items[-1].text[-1] not in ".?!":
            # a long item wrapped onto the next line; a finished sentence is not continued
            last = items[-1]
            items[-1] = _Item(f"{last.text} {content}", True, last.header)
        else:
            items.append(_Item(content, False, header))
            loose.append(loose_header)
            if len(content.split()) <= 6 and content[-1] not in ".?!":
                loose_header = content
            open_item = False
    if any(item.marked for item in items):
        return [
            _Item(item.text, True, heading)
            for item, heading in zip(items, loose, strict=True)
            if item.marked
        ]
    return [item for item in items if not _is_chatter(item.text)]


def _json_strings(value: Any, keys: Sequence[str]) -> list[str]:
    """String items of a JSON list, of a dict wrapping one, or of dicts naming them."""
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, list)]
        if len(lists) == 1:
            return _json_strings(lists[0], keys)
        if all(isinstance(v, str) for v in value.values()):
            return [v for v in value.values() if v.strip()]
        found = _field(value, keys)
        return [found] if found else []
    if not isinstance(value, list):
        return []
    out = []
    for element in value:
        if isinstance(element, str):
            out.append(element)
        elif isinstance(element, dict):
            text = _field(element, keys)
            if text is None:
                strings = [v for v in element.values() if isinstance(v, str)]
                text = strings[0] if len(strings) == 1 else None
            if text:
                out.append(text)
        elif isinstance(element, (int, float)) and not isinstance(element, bool):
            out.append(str(element))
    return [item.strip() for item in out if item.strip()]


def _field(mapping: dict, keys: Sequence[str]) -> Any:
    folded = {fold(str(key)).strip().replace(" ", "_"): value for key, value in mapping.items()}
    for key in keys:
        if key in folded and folded[key] is not None:
            return folded[key]
    return None


def _json_list(text: str) -> Any:
    """The JSON a list-shaped reply holds: one value, or several in a row (JSON lines).

    Only JSON that fills its lines counts, or JSON after a colon ("Here are the facts:
    [...]"): "[1] First item" is a numbered line, and "The label reads [1887]." a fact.
    """
    values = []
    for value, start, end in find_json_spans(text):
        before = text[:start].rsplit("\n", 1)[-1].strip()
        after = text[end:].split("\n", 1)[0].strip(" \t,;")
        if not before.endswith(":") and (before or after):
            if values:
                break
            continue
        values.append(value)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


_LEADING_TAG = re.compile(
    r"^[\[(](?P<tag>[^\])]{1,60})[\])]\s*[:.\-\u2013\u2014|]?\s*(?P<rest>.*)$"
)
_LABEL_PREFIX = re.compile(
    r"^(?P<tag>[^:?|\[\]()]{1,60}?)\s*(?::|\s[\-\u2013\u2014|]\s)\s*(?P<rest>.+)$"
)
_QUESTION_WORD = re.compile(
    r"^(?:what|where|who|whom|whose|when|why|how|which|is|are|was|were|does|do|did|can|could"
    r"|would|will|should|has|have)\b",
    re.IGNORECASE,
)
_TRAILING_TAG = re.compile(r"^(?P<rest>.+?)\s*[\[(](?P<tag>[^\])]{1,60})[\])]\.?$")


def _tagged(text: str, labels: Sequence[str]) -> tuple[str | None, str, bool]:
    """(label, rest, had_tag): a label written before or after the text, if any."""
    text = text.strip()
    if (match := _LEADING_TAG.match(text)) and match["rest"]:
        return match_label(match["tag"], labels), match["rest"].strip(), True
    if match := _LABEL_PREFIX.match(text):
        label = match_label(match["tag"], labels)
        # an unknown "Colour: what..." prefix is still a tag when a colon sets it off,
        # but "Is the text legible: yes or no?" is a question with a colon in it
        unknown_tag = (
            ":" in text[: match.start("rest")]
            and len(match["tag"].split()) <= 4
            and not _QUESTION_WORD.match(match["tag"])
        )
        if label or unknown_tag:
            return label, match["rest"].strip(), True
    if (match := _TRAILING_TAG.match(text)) and (label := match_label(match["tag"], labels)):
        return label, match["rest"].strip(), True
    return None, text, False


_APOSTROPHE = re.compile(r"(?<=\w)'(?=\w)")


def _strip_quotes(caption: str) -> str:
    """Quotes around the whole caption go; `"OPEN" is above the "EXIT"` keeps its quotes."""
    while len(caption) > 2 and caption[0] in "\"'" and caption[-1] == caption[0]:
        inner = caption[1:-1]
        quotes = [i for i, char in enumerate(_APOSTROPHE.sub("_", inner)) if char == caption[0]]
        # an inner quote right after a letter closes a span the leading quote opened
        if quotes and (quotes[0] == 0 or not inner[quotes[0] - 1].isspace()):
            break
        caption = inner.strip()
    return caption


# ---------------------------------------------------------------------------- items

_ITEM_KEYS = ("text", "item", "fact", "question", "statement", "content", "value")


def parse_items(text: str) -> list[str]:
    """The items of a list-shaped reply (numbered, bulleted, plain lines or JSON)."""
    prepared = _require_text(text)
    value = _json_list(prepared)
    if value is not None:
        items = [strip_inline_markdown(item) for item in _json_strings(value, _ITEM_KEYS)]
    else:
        items = [item.text for item in _items(prepared)]
    if not items:
        raise ParseError("no_items", f"no list items in {snippet(text)}")
    return items
