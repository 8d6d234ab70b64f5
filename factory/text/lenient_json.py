"""JSON as models write it: inside prose, with single quotes, bare keys, trailing commas,
stray inner quotes, or cut off by the token limit.

Valid JSON is read as is. Anything else goes through one repairing pass that rebuilds the
text token by token; a value cut off at the end is dropped rather than guessed at, so a
truncated list keeps its complete elements and a truncated object its complete members.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

_DECODER = json.JSONDecoder(strict=False)
_CLOSERS = {"{": "}", "[": "]"}
_LITERALS = {
    "true": "true",
    "false": "false",
    "null": "null",
    "True": "true",
    "False": "false",
    "None": "null",
}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?$")
_BARE_KEY = re.compile(r"[A-Za-z_][\w \-]*$")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "/": "/"}
# a repair pass is linear, but prose full of brackets should not cost a pass per bracket
MAX_ATTEMPTS = 40


class _Unrepairable(Exception):
    pass


@dataclass
class _Frame:
    opener: str
    open_at: int  # output length just after the opening bracket
    complete_at: int | None = None  # output length after the last complete element
    expect_key: bool = field(default=False)


def find_json(text: str, line_start_only: bool = False) -> list[Any]:
    """Every JSON object or array in `text`, in order, repaired where that is possible.

    `line_start_only` considers only brackets that open a line, so that a list item such
    as `1. The label reads [1887]` is not taken for JSON.
    """
    return [value for value, _, _ in find_json_spans(text, line_start_only)]


def find_json_spans(text: str, line_start_only: bool = False) -> list[tuple[Any, int, int]]:
    """find_json with each value's (start, end) offsets in `text`."""
    found: list[tuple[Any, int, int]] = []
    position = 0
    for _ in range(MAX_ATTEMPTS):
        start = _next_opening(text, position, line_start_only)
        if start < 0:
            break
        parsed = _parse_at(text, start)
        if parsed is None:
            position = start + 1
            continue
        value, end = parsed
        found.append((value, start, end))
        position = end
    return found


def _next_opening(text: str, position: int, line_start_only: bool) -> int:
    pattern = r"(?m)^[ \t]*([\[{])" if line_start_only else r"([\[{])"
    match = re.compile(pattern).search(text, position)
    return match.start(1) if match else -1


def _parse_at(text: str, start: int) -> tuple[Any, int] | None:
    try:
        return _DECODER.raw_decode(text, start)
    except ValueError:
        pass
    try:
        repaired, end = _repair(text, start)
        return json.loads(repaired, strict=False), end
    except (_Unrepairable, ValueError):
        return None


def _repair(text: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    stack: list[_Frame] = []
    i = start
    n = len(text)
    while i < n:
        char = text[i]
        frame = stack[-1] if stack else None
        if char.isspace():
            out.append(char)
            i += 1
        elif char in "{[":
            out.append(char)
            stack.append(_Frame(char, len(out), expect_key=char == "{"))
            i += 1
        elif char in "}]":
            if frame is None:
                raise _Unrepairable
            _close(out, stack)
            i += 1
            if not stack:
                return "".join(out), i
        elif frame is None:
            raise _Unrepairable
        elif char == ",":
            _drop_trailing_comma(out)
            if out and out[-1] not in "{[":
                out.append(",")
            frame.expect_key = frame.opener == "{"
            i += 1
        elif char == ":":
            out.append(":")
            frame.expect_key = False
            i += 1
        elif char in "\"'":
            value, i, closed = _read_string(text, i)
            if not closed:
                break
            out.append(json.dumps(value, ensure_ascii=False))
            if not frame.expect_key:
                frame.complete_at = len(out)
        else:
            i = _read_bare(text, i, frame, out)
    # ran out of text inside a container: keep what was complete, close the rest
    if not stack:
        raise _Unrepairable
    frame = stack[-1]
    del out[frame.complete_at if frame.complete_at is not None else frame.open_at :]
    while stack:
        _close(out, stack)
    return "".join(out), n


def _close(out: list[str], stack: list[_Frame]) -> None:
    frame = stack.pop()
    _drop_trailing_comma(out)
    if frame.opener == "{" and not frame.expect_key and out[-1] == ":":
        raise _Unrepairable  # a key without a value
    out.append(_CLOSERS[frame.opener])
    if stack:
        stack[-1].complete_at = len(out)


def _drop_trailing_comma(out: list[str]) -> None:
    end = len(out)
    while end and out[end - 1].isspace():
        end -= 1
    if end and out[end - 1] == ",":
        del out[end - 1 :]


def _read_string(text: str, i: int) -> tuple[str, int, bool]:
    """A quoted string from text[i]; a quote ends it only where JSON syntax can follow, so
    apostrophes and quoted words inside it survive."""
    quote = text[i]
    chars: list[str] = []
    j = i + 1
    n = len(text)
    while j < n:
        char = text[j]
        if char == "\\" and j + 1 < n:
            escaped = text[j + 1]
            if escaped == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[j + 2 : j + 6]):
                chars.append(chr(int(text[j + 2 : j + 6], 16)))
                j += 6
                continue
            chars.append(_ESCAPES.get(escaped, escaped))
            j += 2
            continue
        if char == quote and _ends_string(text, j + 1):
            return "".join(chars), j + 1, True
        chars.append(char)
        j += 1
    return "".join(chars), n, False


def _ends_string(text: str, j: int) -> bool:
    rest = text[j:].lstrip()
    return not rest or rest[0] in ",:}]"


def _read_bare(text: str, i: int, frame: _Frame, out: list[str]) -> int:
    if frame.expect_key:
        end = text.find(":", i)
        key = text[i:end].strip() if end >= 0 else ""
        if not _BARE_KEY.match(key) or "\n" in text[i:end]:
            raise _Unrepairable
        out.append(json.dumps(key))
        return end
    match = re.compile(r"[^,}\]\n]*").match(text, i)
    token = match.group().strip() if match else ""
    if not token:
        raise _Unrepairable
    if token in _LITERALS:
        out.append(_LITERALS[token])
    elif _NUMBER.match(token):
        out.append(token)
    elif frame.opener == "{":
        # `verdict: consistent` -- a bare word as a member's value reads as a string;
        # in a list it would more likely be prose in brackets, so that stays unrepairable
        out.append(json.dumps(token, ensure_ascii=False))
    else:
        raise _Unrepairable
    frame.complete_at = len(out)
    return match.end() if match else i + 1
