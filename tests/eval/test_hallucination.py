"""CHAIR-style hallucination and coverage on hand-checked captions."""

from __future__ import annotations

import pytest

from factory.eval.hallucination import (
    HallucinationConfig,
    build_lexicon,
    expert_objects,
    hallucination_scores,
)


@pytest.fixture(scope="module")
def lexicon():
    return build_lexicon(HallucinationConfig())


def test_mentions_use_synonyms_plurals_and_longest_phrases(lexicon):
    text = "Two stallions and an old man stand by a sailing ship; the sky is oil on canvas."
    # stallions -> horse; "old man" -> man; "sailing ship" is its own label; materials
    # ("canvas") are not objects
    assert lexicon.mentions(text) == ["horse", "man", "sailing ship", "sky"]
    assert lexicon.mentions("Cattle near houses and children") == ["cow", "house", "child"]


def test_expert_objects_respect_scores(lexicon):
    config = HallucinationConfig(min_tag_score=0.2, min_object_score=0.5)
    tags = [{"label": "horse", "score": 0.3}, {"label": "dog", "score": 0.1}]
    boxes = [{"label": "old man", "score": 0.9}, {"label": "boat", "score": 0.4}]
    assert expert_objects(tags, boxes, lexicon, config) == {"horse", "man"}


def test_chair_and_coverage_by_hand(lexicon):
    captions = {
        "a": "A horse and a dog in a field.",  # horse, dog, field; dog is not supported
        "b": "A woman holds a cup.",  # both supported
        "c": "A ship at sea.",  # no expert objects: not judged
        "d": "",
    }
    experts = {"a": {"horse", "field", "tree"}, "b": {"woman", "cup"}, "d": {"horse"}}
    result = hallucination_scores(captions, experts, lexicon)
    assert result["judged"] == 2
    assert result["chair_i"] == pytest.approx(1 / 5)
    assert result["chair_s"] == pytest.approx(1 / 2)
    # covered: horse, field, woman, cup of horse, field, tree, woman, cup
    assert result["coverage"] == pytest.approx(4 / 5)
    assert result["unsupported_objects"] == {"dog": 1}


def test_custom_synonym_map(tmp_path, lexicon):
    synonyms = tmp_path / "synonyms.yaml"
    synonyms.write_text("horse: [nag]\nzebra: [zebras]\n")
    custom = build_lexicon(HallucinationConfig(synonyms=str(synonyms)))
    assert custom.mentions("A nag beside a zebra") == ["horse", "zebra"]
    assert lexicon.mentions("A nag beside a zebra") == []
