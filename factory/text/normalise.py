"""Character-level clean-ups shared by the parsers and the health rules."""

from __future__ import annotations

import re
import unicodedata

# Models emit typographic quotes as often as plain ones; parsing sees only plain ones.
_QUOTES = str.maketrans(
    {
        "\u2018": "'",
        "\u2019": "'",
        "\u201a": "'",
        "\u201b": "'",
        "\u2032": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u00a0": " ",
        "\u200b": "",
        "\ufeff": "",
    }
)
# Letters that NFKD does not split into a base letter and a mark.
_UNSPLIT = str.maketrans(
    {"ø": "o", "Ø": "O", "æ": "ae", "Æ": "Ae", "œ": "oe", "Œ": "Oe", "ł": "l", "Ł": "L"}
)
_FENCE = re.compile(r"^\s*(```|~~~)[\w-]*\s*$", re.MULTILINE)
_BOLD = re.compile(r"(\*\*|__)(?=\S)(.+?)(?<=\S)\1")
_ITALIC = re.compile(r"(?<![\w*])\*(?=[^\s*])([^*\n]+?)(?<=[^\s*])\*(?![\w*])")
_CODE = re.compile(r"`([^`\n]*)`")


def plain_quotes(text: str) -> str:
    return text.translate(_QUOTES)


def strip_fences(text: str) -> str:
    """Drops ``` fence lines and keeps what they enclosed."""
    return _FENCE.sub("", text)


def prepare(text: str | None) -> str:
    """The form every parser starts from: plain quotes, no fences, \\n line ends."""
    text = (text or "").replace("\r\n", "\n").replace("\r", "\n")
    return strip_fences(plain_quotes(text)).strip()


def strip_inline_markdown(text: str) -> str:
    """**bold**, __bold__, *italic* and `code` lose their markers; underscores in words stay."""
    text = _BOLD.sub(r"\2", text)
    text = _ITALIC.sub(r"\1", text)
    text = _CODE.sub(r"\1", text)
    # an unpaired ** left by a bold span that wrapped a line break
    return text.replace("**", "").strip()


def deaccent(text: str) -> str:
    """Letters without diacritics, case kept: "Dürer" -> "Durer"."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_UNSPLIT))
    return "".join(char for char in decomposed if not unicodedata.combining(char))


def fold(text: str) -> str:
    """Case- and diacritics-insensitive form for comparisons."""
    return deaccent(text).casefold()


def words(text: str) -> list[str]:
    """Folded word tokens (letters, digits, apostrophes inside words)."""
    return re.findall(r"[^\W_]+(?:'[^\W_]+)*", fold(text))


def snippet(text: str, limit: int = 120) -> str:
    """A one-line excerpt for error details."""
    flat = " ".join((text or "").split())
    return repr(flat if len(flat) <= limit else flat[: limit - 3] + "...")
