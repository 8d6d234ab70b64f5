"""JSON request bodies, parsed and bounded before any model sees them.

Bounds the work one body can cause and turns every way a body can break the parser or
the tokenizer into a specific 4xx: nesting deeper than `max_json_depth` (400, also where
the parser itself would recurse too deep), more than `max_json_keys` object keys (413,
so a body of a million unknown keys never reaches validation), a text over
`max_text_chars` (413; image fields excepted, they have their own byte limit) and text
that is not valid Unicode, such as a lone surrogate escape `\\udfff` (400).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from factory.serve.api_errors import ApiError
from factory.serve.serve_config import RequestLimits

# Fields holding image data (base64, data or http URLs): bounded by max_image_bytes.
IMAGE_FIELDS = frozenset({"image", "image_url", "url"})


def parse_json(
    raw: bytes | str, limits: RequestLimits, first: Callable[[Any], None] | None = None
) -> Any:
    """The body as JSON within the limits; each failure a 4xx naming what is wrong.

    `first` checks the parsed value before the walk (a cheap specific refusal first)."""
    try:
        data = json.loads(raw)
    except RecursionError:
        raise _too_deep(limits) from None
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {error}") from None
    if first is not None:
        first(data)
    check_tree(data, limits)
    return data


def check_tree(data: Any, limits: RequestLimits) -> None:
    """Depth, key count and every text of a parsed body; iterative, so no recursion."""
    keys = 0
    pending: list[tuple[Any, int, str]] = [(data, 1, "body")]
    while pending:
        value, depth, name = pending.pop()
        if isinstance(value, str):
            check_text(value, name, limits)
        elif isinstance(value, dict | list):
            if depth > limits.max_json_depth:
                raise _too_deep(limits)
            if isinstance(value, dict):
                keys += len(value)
                if keys > limits.max_json_keys:
                    raise ApiError(
                        413,
                        "too_many_keys",
                        f"the body has more than {limits.max_json_keys:,} object keys",
                    )
                for key, item in value.items():
                    check_text(key, "a key", limits)
                    pending.append((item, depth + 1, key))
            else:
                pending.extend((item, depth + 1, name) for item in value)


def check_text(text: str, name: str, limits: RequestLimits) -> None:
    """Valid Unicode, and no longer than max_text_chars unless it is image data."""
    if len(text) > limits.max_text_chars and name not in IMAGE_FIELDS:
        raise ApiError(
            413,
            "text_too_long",
            f"{name} has {len(text):,} characters; the limit is {limits.max_text_chars:,}",
            name,
        )
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ApiError(
            400,
            "invalid_text",
            f"{name} is not valid Unicode text ({error.reason} at character {error.start})",
            name,
        ) from None


def _too_deep(limits: RequestLimits) -> ApiError:
    return ApiError(
        400,
        "json_too_deep",
        f"the body nests objects and arrays deeper than {limits.max_json_depth} levels",
    )
