"""The parsers against a corpus of messy model replies, plus edge cases the corpus skips."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from factory.text.labels import QA_CATEGORIES, QUESTION_DIMENSIONS
from factory.text.parse import (
    CANNOT_TELL,
    ParseError,
    QAPair,
    Question,
    Verdict,
    clean_caption,
    normalise_verdict,
    parse_facts,
    parse_items,
    parse_qa,
    parse_questions,
    parse_verdict,
)

CORPUS = yaml.safe_load((Path(__file__).parent / "messy_outputs.yaml").read_text("utf-8"))

PARSERS = {
    "items": parse_items,
    "facts": parse_facts,
    "questions": lambda text: parse_questions(text, QUESTION_DIMENSIONS),
    "verdict": parse_verdict,
    "qa": lambda text: parse_qa(text, QA_CATEGORIES),
    "caption": clean_caption,
}


def _as_plain(kind: str, value):
    if kind == "questions":
        return [[q.dimension, q.question] for q in value]
    if kind == "qa":
        return [[p.category, p.question, p.answer] for p in value]
    if kind == "verdict":
        return {"verdict": value.verdict, "reason": value.reason, "correction": value.correction}
    return value


def test_corpus_is_large_and_covers_every_parser():
    assert len(CORPUS) >= 40
    assert {case["kind"] for case in CORPUS} == set(PARSERS)
    assert len({case["name"] for case in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[case["name"] for case in CORPUS])
def test_messy_output(case):
    parse = PARSERS[case["kind"]]
    expected = case["expected"]
    if isinstance(expected, dict) and "error" in expected:
        with pytest.raises(ParseError) as raised:
            parse(case["output"])
        assert raised.value.reason == expected["error"]
        return
    got = _as_plain(case["kind"], parse(case["output"]))
    if case["kind"] == "verdict":
        expected = dict(expected)
        if "reason" not in expected:
            got.pop("reason")
    assert got == expected


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize(
    "parse",
    [parse_items, parse_facts, parse_verdict, clean_caption]
    + [lambda t: parse_questions(t, QUESTION_DIMENSIONS), lambda t: parse_qa(t, QA_CATEGORIES)],
)
@pytest.mark.parametrize("text", ["", "   ", "\n\n", "```\n```", None])
def test_empty_replies_raise_empty(parse, text):
    with pytest.raises(ParseError) as raised:
        parse(text)
    assert raised.value.reason == "empty"


def test_parse_error_is_a_value_error_with_a_snippet():
    with pytest.raises(ValueError) as raised:
        parse_verdict("The sky is cloudy and a tree leans over the path. " * 10)
    error = raised.value
    assert isinstance(error, ParseError)
    assert error.reason == "no_verdict"
    assert "The sky is cloudy" in error.detail
    assert len(error.detail) < 200  # a snippet, not the whole reply


def test_truncated_json_list_keeps_complete_items():
    assert parse_items('["one", "two", {"three": ') == ["one", "two"]


def test_truncated_json_with_nothing_complete_falls_back_to_lines():
    with pytest.raises(ParseError):
        parse_facts('["A horse stand')  # no complete fact survives; the fragment is no list


def test_bracketed_number_inside_an_item_is_not_json():
    assert parse_facts("1. The label reads [1887].\n2. The label is white.") == [
        "The label reads [1887].",
        "The label is white.",
    ]


def test_json_lines_of_objects():
    text = '{"question": "Is it raining?"}\n{"question": "Is the door open?"}'
    assert parse_items(text) == ["Is it raining?", "Is the door open?"]


def test_numbers_that_are_not_markers():
    assert parse_items("1.5 metres of rope\n2 cats") == ["1.5 metres of rope", "2 cats"]


def test_dataclasses_are_frozen():
    for value in (Question(None, "q"), Verdict("consistent", "", None), QAPair("type", "q", "a")):
        with pytest.raises(AttributeError):
            value.question = "changed"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("consistent", "consistent"),
        ("Inconsistent", "inconsistent"),
        ("NOT CONSISTENT", "inconsistent"),
        ("not correct", "inconsistent"),
        ("contradicted by the image", "inconsistent"),
        ("False", "inconsistent"),
        ("no", "inconsistent"),
        ("yes", "consistent"),
        ("Supported", "consistent"),
        ("true", "consistent"),
        ("unverifiable", "unverifiable"),
        ("Cannot be verified", "unverifiable"),
        ("can't tell", "unverifiable"),
        ("not visible", "unverifiable"),
        ("Unknown", "unverifiable"),
        ("not supported", "unverifiable"),
        ("neither consistent nor inconsistent", "unverifiable"),
        ("The fact is clearly inconsistent with the image", "inconsistent"),
        ("the claim is entirely accurate", "consistent"),
        ("a horse", None),
        ("notably", None),
    ],
)
def test_normalise_verdict(text, label):
    assert normalise_verdict(text) == label


def test_inconsistent_is_never_read_as_consistent():
    for text in ("inconsistent", "INCONSISTENT.", "**Inconsistent**", "Verdict: inconsistent"):
        assert parse_verdict(text).verdict == "inconsistent"


@pytest.mark.parametrize(
    "answer",
    [
        "cannot tell from the image",
        "Cannot tell",
        "can't tell from the picture",
        "Unknown",
        "Not visible.",
        "It is not possible to determine from the image.",
        "The creator cannot be identified from the image.",
        "There is no visible text.",
        "N/A",
    ],
)
def test_cannot_tell_answers_are_normalised(answer):
    pairs = parse_qa(f"creator | Who made it? | {answer}", QA_CATEGORIES)
    assert pairs == [QAPair("creator", "Who made it?", CANNOT_TELL)]


@pytest.mark.parametrize(
    "answer", ["Oil on canvas.", "Bronze, with a green patina.", "A woman; her name is unknown."]
)
def test_real_answers_stay(answer):
    assert parse_qa(f"material | What is it made of? | {answer}", QA_CATEGORIES)[0].answer == (
        answer
    )


def test_qa_categories_are_limited_to_those_asked():
    text = "subject | What is shown? | A cat.\ntitle | What is it called? | Cat"
    assert [pair.category for pair in parse_qa(text, ["subject"])] == ["subject"]


def test_questions_keep_order_and_drop_repeats():
    text = "1. [spatial] Where is the cat?\n2. [spatial] Where is the cat?\n3. What is it?"
    assert parse_questions(text, QUESTION_DIMENSIONS) == [
        Question("spatial layout", "Where is the cat?"),
        Question(None, "What is it?"),
    ]


def test_caption_keeps_a_plain_caption_as_is():
    caption = "A white jug stands on a wooden table, in front of a green curtain."
    assert clean_caption(caption) == caption


def test_caption_does_not_mistake_description_for_chatter():
    caption = "This painting shows a harbour. Note the red sail on the left."
    assert clean_caption(caption) == caption
