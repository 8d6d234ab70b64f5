"""A caption with the reply's preamble, label, quotes and afterword taken off."""

from __future__ import annotations

import re

from factory.text.normalise import prepare, snippet, strip_inline_markdown
from factory.text.parse.items import _HEADER, _RULE, _is_chatter, _strip_marker, _strip_quotes
from factory.text.parse.parse_errors import ParseError

_INTERJECTION = re.compile(
    r"^(?:sure|certainly|of course|okay|ok|absolutely|alright|great|got it)\b[!.,:]*\s*", re.I
)
_INTRO = re.compile(
    r"^(?:here(?:'s| is| are)|below is|i(?:'ve| have) (?:written|rewritten|revised))"
    r"\b[^:\n]{0,100}?:\s*",
    re.I,
)
_INTRO_SENTENCE = re.compile(
    r"^(?:here(?:'s| is| are)|below is|i(?:'ve| have) (?:written|rewritten|revised))\b"
    r"[^.\n]{0,100}[.!]$",
    re.I,
)
_CAPTION_LABEL = re.compile(
    r"^(?:(?:final|revised|rewritten|corrected|new|updated|expanded|improved|objective"
    r"|detailed|fused|longer)\s+)*(?:caption|description|formal analysis|analysis|answer"
    r"|output)\s*(?:\(\d+\s*characters\))?\s*:\s*",
    re.I,
)
_TITLE_WORDS = re.compile(
    r"\b(?:caption|description|analysis|image|artwork|picture|photograph|overview|summary)\b",
    re.I,
)
_REFUSAL = re.compile(
    r"^(?:i'm sorry|i am sorry|sorry,|i cannot|i can't|i can not|i am unable|i'm unable"
    r"|as an ai|unfortunately,? i\b|i do not see|i don't see|i'm not able|i am not able)",
    re.I,
)
# where a reply's caption ends and its remarks about the caption begin
_AFTERWORD = re.compile(
    r"""^\(?(?:
        notes?\s*: | please\s+note | explanation\s*: | changes?(?:\s+made)?\s*:
      | edits?(?:\s+made)?\s*: | summary\s+of\s+(?:changes|edits)
      | i(?:'ve|\s+have)\s | i\s+(?:removed|corrected|kept|replaced|changed|added|hope|made)\b
      | i'd\s | i\s+would\s | hope\s+this | let\s+me\s+know | feel\s+free | if\s+you\s
      | this\s+(?:caption|description|revised|rewritten|version|revision)\b
      | the\s+(?:revised|rewritten|above|new|updated|corrected)\s+(?:caption|description)
      | (?:word|character)\s+count | \d+\s+(?:characters|words)\b
      | is\s+there\s+anything
    )""",
    re.IGNORECASE | re.VERBOSE,
)
_SENTENCES = re.compile(r"(?<=[.!?)])\s+(?=\S)")


def clean_caption(text: str) -> str:
    """The caption alone: no preamble, label, surrounding quotes, markdown or afterword.

    Paragraph breaks survive (a formal analysis has several); a heading line becomes a
    "Heading:" lead-in of the paragraph under it. Typographic quotes become plain ones.
    """
    lines = [line.strip() for line in prepare(text).split("\n")]
    if not any(lines):
        raise ParseError("empty", "the reply is empty")
    if _REFUSAL.match(strip_inline_markdown(lines[0])):
        raise ParseError("refusal", f"the model declined: {snippet(text)}")
    lines = _drop_afterword(_drop_preamble(lines))
    caption = _strip_quotes(_CAPTION_LABEL.sub("", _join_paragraphs(lines)).strip())
    if not re.search(r"[^\W_]", caption):
        raise ParseError("empty", f"no caption left in {snippet(text)}")
    return caption


def _drop_preamble(lines: list[str]) -> list[str]:
    while lines:
        line = lines[0]
        if not line or _RULE.match(line):
            lines = lines[1:]
            continue
        if heading := _HEADER.match(line):
            if _is_title(heading["hash"] or heading["bold"], lines[1:]):
                lines = lines[1:]
                continue
            break
        plain = strip_inline_markdown(line)
        rest = _INTERJECTION.sub("", plain)
        rest = _INTRO.sub("", rest)
        rest = _CAPTION_LABEL.sub("", rest).strip()
        if not rest or _INTRO_SENTENCE.match(rest) or (rest != plain and _is_chatter(rest)):
            lines = lines[1:]
            continue
        if rest != plain:
            lines = [rest, *lines[1:]]
        break
    return lines


def _is_title(heading: str, below: list[str]) -> bool:
    """A heading over the whole reply ("## Caption"), not over its first paragraph."""
    if _TITLE_WORDS.search(heading):
        return True
    following = next((line for line in below if line), "")
    return bool(_HEADER.match(following))


def _drop_afterword(lines: list[str]) -> list[str]:
    seen_content = False
    for index, line in enumerate(lines):
        plain = strip_inline_markdown(line).lstrip("*_(# ")
        if seen_content and _AFTERWORD.match(plain):
            lines = lines[:index]
            break
        seen_content = seen_content or bool(plain)
    while lines and not lines[-1]:
        lines = lines[:-1]
    if lines:
        # trailing chatter inside the last paragraph: "... background. Let me know if ..."
        sentences = _SENTENCES.split(lines[-1])
        while len(sentences) > 1 and _AFTERWORD.match(sentences[-1].lstrip("*_( ")):
            sentences.pop()
        lines[-1] = " ".join(sentences)
    return lines


def _join_paragraphs(lines: list[str]) -> str:
    paragraphs: list[str] = []
    current: list[str] = []
    lead_in: str | None = None
    for line in [*lines, ""]:
        heading = _HEADER.match(line) if line else None
        if not line or _RULE.match(line) or heading:
            if current:
                paragraphs.append(" ".join(current))
                current = []
            if heading:
                lead_in = strip_inline_markdown(heading["hash"] or heading["bold"]).rstrip(":")
            continue
        content = strip_inline_markdown(_strip_marker(line)[0])
        if lead_in is not None:
            content, lead_in = f"{lead_in}: {content}", None
        current.append(content)
    return "\n\n".join(" ".join(paragraph.split()) for paragraph in paragraphs)
