"""The shared string limit kept beside the grammar: which schemas give it up, and the
counter that follows each row's characters."""

from __future__ import annotations

import json

import pytest

from factory.models.demo.chat_models import build_tiny_llama
from factory.models.json_string_bound import StringCounter, TokenChars, hoist_string_bound
from factory.text import schemas
from factory.text.labels import QA_CATEGORIES


def _object(**properties) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


TEXT = {"type": "string", "minLength": 1, "maxLength": 30}


@pytest.mark.parametrize(
    "reply",
    [
        schemas.qa_reply(QA_CATEGORIES[:3], 30),
        schemas.questions_reply(("form",), 2, 30),
        schemas.facts_reply(3, 30),
        schemas.verdict_reply(30),
    ],
)
def test_every_loop_schema_gives_its_limit_to_the_counter(reply):
    schema = schemas.json_schema(reply)
    hoisted, bound = hoist_string_bound(schema)
    assert bound == 30
    assert "maxLength" not in json.dumps(hoisted)
    assert "maxLength" in json.dumps(schema)  # the caller's schema is left as it was
    assert hoisted["properties"].keys() == schema["properties"].keys()


@pytest.mark.parametrize(
    "schema",
    [
        _object(a=TEXT, b={**TEXT, "maxLength": 31}),  # two limits
        _object(a=TEXT, b={"type": "string"}),  # an unbounded string
        _object(a={**TEXT, "pattern": "^[a-z]+$"}),
        _object(a={**TEXT, "format": "date"}),
        _object(a_key_longer_than_thirty_characters=TEXT),
        _object(a=TEXT, b={"enum": ["a value longer than thirty characters"]}),
        {**_object(a=TEXT), "additionalProperties": TEXT},  # keys the model picks
        _object(a={"type": "integer"}),  # no strings at all
    ],
)
def test_a_schema_no_single_limit_covers_keeps_its_max_length(schema):
    assert hoist_string_bound(schema) == (schema, None)


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    xgrammar = pytest.importorskip("xgrammar")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        build_tiny_llama(str(tmp_path_factory.mktemp("tiny") / "llama"))
    )
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer)
    return tokenizer, TokenChars(info.decoded_vocab)


def _closed_strings(tokenizer, table: TokenChars, text: str) -> list[int]:
    """The character count of every string the counter saw closed, in order."""
    counter, counts = StringCounter(table, bound=10_000), []
    for token in tokenizer.encode(text, add_special_tokens=False):
        was_inside = counter.place.in_string
        counter.advance(token)
        if was_inside and not counter.place.in_string:
            counts.append(counter.place.count)
    return counts


@pytest.mark.parametrize(
    "value",
    [
        "plain words of a caption",
        'a "quoted" title, a back\\slash and a\nnew line',
        "café, 日本語 and 😀: one character each",
        "",
    ],
)
def test_the_counter_counts_decoded_characters_across_tokens(tokens, value):
    tokenizer, table = tokens
    text = json.dumps({"key": value}, ensure_ascii=False)
    assert _closed_strings(tokenizer, table, text) == [3, len(value)]
    escaped = json.dumps({"key": value}, ensure_ascii=True)  # \u00e9 escapes: one each
    emoji_pairs = sum(ord(char) > 0xFFFF for char in value)  # a surrogate pair counts two
    assert _closed_strings(tokenizer, table, escaped) == [3, len(value) + emoji_pairs]


def test_room_is_told_only_near_the_limit_and_never_inside_an_escape(tokens):
    tokenizer, table = tokens
    counter = StringCounter(table, bound=table.widest + 5)
    for token in tokenizer.encode('{"k":"ab', add_special_tokens=False):
        counter.advance(token)
    assert counter.place.in_string and counter.place.count == 2
    assert counter.room() is None  # every token still fits
    for token in tokenizer.encode("cdef", add_special_tokens=False):
        counter.advance(token)
    assert counter.room() == table.widest - 1
    (backslash,) = [i for i, raw in enumerate(table.token_bytes) if raw == b"\\"]
    counter.advance(backslash)
    assert counter.room() is None  # the escape's character is counted; its letter is free
