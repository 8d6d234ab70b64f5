"""Diversity of the captions of one image (DEArt): lexical, semantic, edit distance.

- type-token ratio: distinct words / words, over all captions of an image together;
- semantic diversity: 1 - mean cosine similarity over the pairs of an image's captions
  (sentence embeddings; all-MiniLM-L6-v2 by default);
- edit distance: mean Levenshtein distance over the pairs, in characters and in words.
Images with one caption have no pairs and count only in the type-token ratio.
Words are the PTB tokens the caption metrics use, so "isn't" is two words everywhere.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations

import numpy as np

from factory.eval.tokenize import python_ptb_tokens

# texts -> (n, dim) unit rows; e.g. factory.models.sentence_embedder.SentenceEmbedder().embed
Embed = Callable[[Sequence[str]], np.ndarray]


@functools.lru_cache(maxsize=4096)
def _words(text: str) -> tuple[str, ...]:
    # a text is tokenised for its type-token ratio and again for each of its pairs
    return tuple(python_ptb_tokens(text))


def type_token_ratio(texts: Sequence[str]) -> float:
    tokens = [token for text in texts for token in _words(text)]
    return len(set(tokens)) / len(tokens) if tokens else 0.0


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance (insert, delete, substitute cost 1) of two strings or word lists.

    rapidfuzz's C++ when installed (the `eval` extra): a 2,000-character pair takes a
    fraction of a millisecond there and about a second in the Python fallback.
    """
    return _levenshtein()(a, b)


@functools.cache
def _levenshtein() -> Callable[[Sequence, Sequence], int]:
    try:
        from rapidfuzz.distance import Levenshtein
    except ImportError:
        return python_edit_distance
    return Levenshtein.distance


def python_edit_distance(a: Sequence, b: Sequence) -> int:
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, item in enumerate(a, 1):
        current = [i]
        for j, other in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (item != other))
            )
        previous = current
    return previous[-1]


def mean_pairwise_edit_distance(texts: Sequence[str], unit: str = "char") -> float | None:
    """Mean distance over the pairs of texts, in characters or in words; None without pairs."""
    items = [text if unit == "char" else _words(text) for text in texts]
    pairs = list(combinations(items, 2))
    if not pairs:
        return None
    return sum(edit_distance(a, b) for a, b in pairs) / len(pairs)


def semantic_diversity(embeddings: np.ndarray) -> float | None:
    """1 - mean cosine over the pairs of unit rows; None with fewer than two rows."""
    count = len(embeddings)
    if count < 2:
        return None
    cosine = embeddings @ embeddings.T
    mean_pair = (cosine.sum() - np.trace(cosine)) / (count * (count - 1))
    return float(1.0 - mean_pair)


def fast_edit_distance() -> bool:
    """Whether rapidfuzz is installed (without it, long captions' distances take seconds)."""
    return _levenshtein() is not python_edit_distance


def caption_diversity(
    captions: Mapping[str, Sequence[str]],
    embed: Embed | None = None,
    edit_distances: bool = True,
) -> dict[str, float | int | None]:
    """Diversity averaged over images; semantic diversity only when `embed` is given, edit
    distances only when `edit_distances`."""
    per_image = {key: [text for text in texts if text] for key, texts in captions.items()}
    per_image = {key: texts for key, texts in per_image.items() if texts}
    with_pairs = {key: texts for key, texts in per_image.items() if len(texts) >= 2}
    result: dict[str, float | int | None] = {
        "images": len(per_image),
        "images_with_pairs": len(with_pairs),
        "captions": sum(len(texts) for texts in per_image.values()),
        "type_token_ratio": _mean(type_token_ratio(t) for t in per_image.values()),
        "corpus_type_token_ratio": type_token_ratio(
            [text for texts in per_image.values() for text in texts]
        ),
    }
    if edit_distances:
        for unit in ("char", "word"):
            result[f"edit_distance_{unit}s"] = _mean(
                mean_pairwise_edit_distance(t, unit) for t in with_pairs.values()
            )
    if embed is not None:
        texts = [text for texts in with_pairs.values() for text in texts]
        vectors = embed(texts) if texts else np.zeros((0, 1), np.float32)
        scores, start = [], 0
        for group in with_pairs.values():
            scores.append(semantic_diversity(vectors[start : start + len(group)]))
            start += len(group)
        result["semantic_diversity"] = _mean(scores)
    return result


def _mean(values) -> float | None:
    found = [value for value in values if value is not None]
    return float(sum(found) / len(found)) if found else None
