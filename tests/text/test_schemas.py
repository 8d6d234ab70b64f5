"""The structured steps' reply models: their JSON schemas, validation and clean-up."""

from __future__ import annotations

import json

import pydantic
import pytest

from factory.text import schemas
from factory.text.labels import QA_CATEGORIES, QUESTION_DIMENSIONS
from factory.text.parse import CANNOT_TELL, ParseError, QAPair, Question, Verdict

REPLIES = {
    "qa": schemas.qa_reply(QA_CATEGORIES),
    "questions": schemas.questions_reply(QUESTION_DIMENSIONS, 8),
    "facts": schemas.facts_reply(24),
    "verdict": schemas.verdict_reply(),
}


def objects(schema: dict) -> list[dict]:
    """Every object schema in `schema`, its $defs included."""
    found = [schema] if schema.get("type") == "object" else []
    for value in [*schema.get("$defs", {}).values(), *schema.get("properties", {}).values()]:
        found.extend(objects(value))
    return found


@pytest.mark.parametrize("name", sorted(REPLIES))
def test_schemas_fit_openai_strict_mode(name):
    # strict json_schema: every property required, no additional properties
    for obj in objects(schemas.json_schema(REPLIES[name])):
        assert obj["additionalProperties"] is False
        assert sorted(obj["required"]) == sorted(obj["properties"])


def test_labels_and_limits_come_from_the_config():
    schema = schemas.json_schema(schemas.qa_reply(("material", "creator"), 30))
    pair = schema["$defs"]["QAPairReply"]["properties"]
    assert pair["category"]["enum"] == ["material", "creator"]
    assert pair["answer"]["maxLength"] == 30 and pair["answer"]["minLength"] == 1
    assert schema["properties"]["pairs"]["maxItems"] == 2
    verdict = schemas.json_schema(REPLIES["verdict"])
    assert verdict["$defs"]["Verdict"]["enum"] == ["consistent", "inconsistent", "unverifiable"]
    assert schemas.qa_reply(("material", "creator"), 30) is schemas.qa_reply(
        ("material", "creator"), 30
    )


def test_qa_reply_validates_and_cleans_up():
    raw = json.dumps(
        {
            "pairs": [
                {"category": "material", "question": "What is it **made** of?", "answer": "Oak."},
                {"category": "creator", "question": "Who made it?", "answer": "Unknown"},
                {"category": "material", "question": "what is it made of", "answer": "Wood"},
            ]
        }
    )
    pairs = schemas.to_qa(REPLIES["qa"].model_validate_json(raw), raw)
    assert pairs == [
        QAPair("material", "What is it made of?", "Oak."),
        QAPair("creator", "Who made it?", CANNOT_TELL),
    ]


@pytest.mark.parametrize(
    "reply",
    [
        {"pairs": [{"category": "colour", "question": "Q?", "answer": "A"}]},  # no such label
        {"pairs": [{"category": "title", "question": "Q?", "answer": "A", "extra": 1}]},
        {"pairs": []},
        {"pairs": [{"category": "title", "question": "", "answer": "A"}]},
    ],
)
def test_qa_reply_refuses_what_the_schema_forbids(reply):
    with pytest.raises(pydantic.ValidationError):
        REPLIES["qa"].model_validate_json(json.dumps(reply))


def test_blank_texts_leave_nothing_and_raise_the_parsers_reason():
    raw = json.dumps({"facts": ["  ", "**"]})
    with pytest.raises(ParseError) as raised:
        schemas.to_facts(REPLIES["facts"].model_validate_json(raw), raw)
    assert raised.value.reason == "no_facts"
    raw = json.dumps({"facts": ["The horse is red.", "the horse is red", "A fence."]})
    facts = schemas.to_facts(REPLIES["facts"].model_validate_json(raw), raw)
    assert facts == ["The horse is red.", "A fence."]


def test_questions_keep_their_dimension():
    raw = json.dumps({"questions": [{"dimension": "visual style", "question": "is it oil?"}]})
    reply = REPLIES["questions"].model_validate_json(raw)
    assert schemas.to_questions(reply, raw) == [Question("visual style", "Is it oil?")]


def test_verdicts_drop_a_consistent_facts_correction():
    raw = '{"verdict": "consistent", "reason": "the horse is red", "correction": "same"}'
    verdict = schemas.to_verdict(REPLIES["verdict"].model_validate_json(raw), raw)
    assert verdict == Verdict("consistent", "The horse is red", None)
    raw = '{"verdict": "inconsistent", "reason": "brown", "correction": "The horse is brown."}'
    verdict = schemas.to_verdict(REPLIES["verdict"].model_validate_json(raw), raw)
    assert verdict == Verdict("inconsistent", "Brown", "The horse is brown.")
    with pytest.raises(pydantic.ValidationError):
        REPLIES["verdict"].model_validate_json('{"verdict": "maybe", "reason": "x"}')
