"""The label sets the prompts are written for, and lenient matching of model-written labels.

Models rarely copy a label verbatim: "Spatial layout", "[spatial]", "spatial_layout",
"Object property" and "artist" all have to land on the label the caller asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

from factory.text.normalise import words

# MUSEUM-65's question categories.
QA_CATEGORIES = (
    "subject",
    "title",
    "creator",
    "material",
    "place",
    "type",
    "language",
    "collection",
)

# The dimensions along which the expand step asks what a caption leaves out.
QUESTION_DIMENSIONS = (
    "scene/setting",
    "spatial layout",
    "object properties",
    "text and symbols",
    "emotion/atmosphere",
    "temporal context",
    "cultural and social background",
    "visual style",
)

# Words models use for a label instead of its own words; used only when the label is
# among those the caller passed.
ALIASES = {
    "artist": "creator",
    "maker": "creator",
    "author": "creator",
    "painter": "creator",
    "medium": "material",
    "location": "place",
    "origin": "place",
    "object type": "type",
    "kind": "type",
    "script": "language",
    "museum": "collection",
    "mood": "emotion/atmosphere",
    "time": "temporal context",
    "period": "temporal context",
    "writing": "text and symbols",
    "inscription": "text and symbols",
    "style": "visual style",
    "culture": "cultural and social background",
}

_FILLER = {"and", "or", "the", "of", "a", "an", "dimension", "category"}


def _stem(word: str) -> str:
    # "properties"/"property", "symbols"/"symbol", "emotional"/"emotion" meet at 5 letters
    word = word.removesuffix("s") if len(word) > 3 else word
    return word[:5]


def _key(text: str) -> frozenset[str]:
    return frozenset(_stem(word) for word in words(text) if word not in _FILLER)


def match_label(text: str | None, labels: Sequence[str]) -> str | None:
    """The label `text` names, or None when it names none or several equally well."""
    if not text:
        return None
    wanted = _key(text)
    if not wanted:
        return None
    exact = [label for label in labels if _key(label) == wanted]
    if len(exact) == 1:
        return exact[0]
    for alias, target in ALIASES.items():
        if _key(alias) == wanted and target in labels:
            return target
    # "spatial" names "spatial layout"; "spatial layout and position" names it too
    scored = []
    for label in labels:
        key = _key(label)
        if wanted <= key or (key <= wanted and len(wanted) <= len(key) + 2):
            scored.append((len(wanted & key), label))
    if not scored:
        return None
    scored.sort(reverse=True)
    if len(scored) > 1 and scored[0][0] == scored[1][0]:
        return None
    return scored[0][1]


def prompt_list(labels: Sequence[str]) -> str:
    """Labels as the {categories} / {dimensions} block of a prompt, one "- label" a line."""
    return "\n".join(f"- {label}" for label in labels)
