"""The length bound on a schema's JSON strings, kept by a counter beside the grammar.

xgrammar (and llguidance) enforce `maxLength` as a bounded repetition, which turns every
token inside such a string into a slow path: 70-110 us per row per token against 4 us for
the same string unbounded (benchmarks/RESULTS.md §10). The loop's schemas bound every text
field by one limit, so the grammar is compiled without `maxLength` and this module keeps
the limit instead: it follows each row's bytes, counts the characters of the string being
written, and near the limit masks the tokens that would carry it past.

Only a schema whose every free string has the same `maxLength` is taken apart this way
(`hoist_string_bound`); keys and enum values must fit under it. Anything else (mixed
limits, patterns, formats, free keys) keeps its `maxLength` in the grammar.

Characters are counted as JSON Schema counts them, one per code point of the decoded
string: a UTF-8 lead byte is one, a continuation byte none, an escape (`\\n`, `\\u00e9`)
one. A surrogate pair written as two `\\u` escapes counts two, one more than the decoded
string holds: the bound errs short, never long.
"""

from __future__ import annotations

import copy
from typing import Any

QUOTE, BACKSLASH = 0x22, 0x5C
_ESCAPE_LENGTH = {ord("u"): 4}  # bytes after the escape letter; every other escape has none
# keys whose values are data, not schemas: a string there is not a string schema
_DATA_KEYS = ("enum", "const", "default", "examples", "description", "title")


def hoist_string_bound(schema: dict[str, Any]) -> tuple[dict[str, Any], int | None]:
    """(the schema without `maxLength`, the one limit all its free strings share), or
    (the schema unchanged, None) where no single limit covers every string."""
    free: list[dict[str, Any]] = []
    fixed: list[str] = []
    if not _collect(schema, free, fixed) or not free:
        return schema, None
    limits = {node.get("maxLength") for node in free}
    if len(limits) != 1 or not isinstance(bound := limits.pop(), int):
        return schema, None
    if any(len(text) > bound for text in fixed):
        return schema, None
    hoisted = copy.deepcopy(schema)
    _strip_max_length(hoisted)
    return hoisted, bound


def _collect(node: Any, free: list[dict[str, Any]], fixed: list[str]) -> bool:
    """Gathers free string schemas and fixed strings (keys, enum values); False where a
    string is shaped by something the counter cannot follow."""
    if isinstance(node, list):
        return all(_collect(item, free, fixed) for item in node)
    if not isinstance(node, dict):
        return True
    if "enum" in node or "const" in node:
        values = node.get("enum", [node.get("const")])
        fixed.extend(value for value in values if isinstance(value, str))
    elif _is_string(node):
        if "pattern" in node or "format" in node:
            return False
        free.append(node)
    if node.get("additionalProperties") not in (None, False) or "patternProperties" in node:
        return False  # keys the model chooses would be bounded as if they were values
    fixed.extend(node.get("properties", {}))
    return all(_collect(value, free, fixed) for key, value in node.items() if key not in _DATA_KEYS)


def _is_string(node: dict[str, Any]) -> bool:
    types = node.get("type")
    return types == "string" or (isinstance(types, list) and "string" in types)


def _strip_max_length(node: Any) -> None:
    if isinstance(node, list):
        for item in node:
            _strip_max_length(item)
    elif isinstance(node, dict):
        if _is_string(node):
            node.pop("maxLength", None)
        for key, value in node.items():
            if key not in _DATA_KEYS:
                _strip_max_length(value)


class TokenChars:
    """Per token of one vocabulary: its bytes, the characters it adds to a string it starts
    inside (up to a closing quote), and whether it holds neither quote nor backslash."""

    def __init__(self, decoded_vocab: list[bytes]):
        self.token_bytes = decoded_vocab
        self.chars = [_chars_inside_string(token) for token in decoded_vocab]
        self.quote_free = [QUOTE not in token and BACKSLASH not in token for token in decoded_vocab]
        self.widest = max(self.chars, default=0)


def _chars_inside_string(token: bytes) -> int:
    place = JsonPlace(in_string=True)
    for byte in token:
        place.feed(byte)
        if not place.in_string:
            break
    return place.count


class JsonPlace:
    """Where a byte stream stands in its JSON: inside a string or not, how many characters
    the string holds so far, and how much of an escape is still to come."""

    def __init__(self, in_string: bool = False):
        self.in_string, self.count = in_string, 0
        self.escape = 0  # 0: no escape open; -1: its letter is next; n > 0: hex digits left

    def feed(self, byte: int) -> None:
        if not self.in_string:
            if byte == QUOTE:
                self.in_string, self.count = True, 0
        elif self.escape == -1:
            self.escape = _ESCAPE_LENGTH.get(byte, 0)
        elif self.escape > 0:
            self.escape -= 1
        elif byte == BACKSLASH:
            self.count += 1
            self.escape = -1
        elif byte == QUOTE:
            self.in_string = False
        elif byte & 0xC0 != 0x80:
            self.count += 1


class StringCounter:
    """One row's place in its JSON, followed token by token against one string limit."""

    def __init__(self, table: TokenChars, bound: int):
        self.table, self.bound = table, bound
        self.place = JsonPlace()

    def advance(self, token: int) -> None:
        place = self.place
        if place.in_string and not place.escape and self.table.quote_free[token]:
            place.count += self.table.chars[token]
            return
        for byte in self.table.token_bytes[token]:
            place.feed(byte)

    def between_characters(self) -> bool:
        """Inside a string, with no escape half written."""
        return self.place.in_string and not self.place.escape

    def room(self) -> int | None:
        """Characters the string may still take where some token could overrun them, else
        None (nothing to mask). Inside an escape the character is already counted."""
        if not self.between_characters():
            return None
        left = self.bound - self.place.count
        return left if left < self.table.widest else None
