"""The prompts ask for formats the parsers read: each prompt's own example parses."""

from __future__ import annotations

import re

import pytest

from factory.prompts import available, load_prompt
from factory.text.labels import QA_CATEGORIES, QUESTION_DIMENSIONS, prompt_list
from factory.text.parse import (
    CANNOT_TELL,
    QAPair,
    Question,
    clean_caption,
    parse_facts,
    parse_qa,
    parse_questions,
    parse_verdict,
)

FIELDS = {
    "caption_fusion": {"auxiliary"},
    "caption_objective": {"auxiliary"},
    "caption_detailed": {"auxiliary"},
    "caption_formal_analysis": {"auxiliary"},
    "qa": {"categories", "auxiliary"},
    "expand_questions": {"caption", "dimensions"},
    "expand_answer": {"caption", "questions"},
    "decompose": {"caption"},
    "critic": {"fact", "caption"},
    "rewrite": {"caption", "verdicts"},
    "serve_answer": {"question"},
}


def fields_of(text: str) -> set[str]:
    # {{ and }} are literal braces (the critic's JSON), not fields
    return set(re.findall(r"(?<!{){(\w+)}(?!})", text))


def example(rendered: str) -> str:
    """The lines after "For example:" up to the next blank line."""
    after = re.split(r"(?i)for example:", rendered, maxsplit=1)[1].lstrip("\n")
    return after.split("\n\n", 1)[0]


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_prompt_has_its_fields(name):
    assert name in available()
    assert fields_of(load_prompt(name).text) == FIELDS[name]


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_prompt_renders_every_field_and_nothing_else(name):
    values = {field: f"<{field.upper()}>" for field in FIELDS[name]}
    rendered = load_prompt(name).render(**values)
    for value in values.values():
        assert value in rendered
    assert not fields_of(rendered)
    # a missing field renders empty rather than failing
    assert load_prompt(name).render()


def test_objective_prompt_keeps_the_deart_limits():
    text = load_prompt("caption_objective").text
    assert load_prompt("caption_objective").version == 2
    assert "250 characters" in text
    for rule in ("foreground to the background", "pronouns", "left, right, centre"):
        assert rule in text


def test_formal_analysis_names_the_aspects_and_forbids_identities():
    text = load_prompt("caption_formal_analysis").text
    for aspect in (
        "Composition",
        "Colour palette",
        "Light and shadow",
        "Form and shape",
        "Line",
        "Texture",
        "Space and",
        "depth",
        "Perspective",
    ):
        assert aspect in text
    assert "Do not name the title" in text


def test_qa_example_parses():
    rendered = load_prompt("qa").render(categories=prompt_list(QA_CATEGORIES))
    assert "- subject\n- title" in rendered
    pairs = parse_qa(example(rendered), QA_CATEGORIES)
    assert [pair.category for pair in pairs] == ["material", "creator"]
    assert pairs[1] == QAPair("creator", "Who made this object?", CANNOT_TELL)
    assert CANNOT_TELL in rendered


def test_expand_questions_example_parses():
    rendered = load_prompt("expand_questions").render(
        caption="A table.", dimensions=prompt_list(QUESTION_DIMENSIONS)
    )
    assert parse_questions(example(rendered), QUESTION_DIMENSIONS) == [
        Question("spatial layout", "What is on the far left of the table?"),
        Question("text and symbols", "What does the sign above the door say?"),
    ]


def test_decompose_example_parses():
    rendered = load_prompt("decompose").render(caption="A horse.")
    assert parse_facts(example(rendered)) == [
        "A brown horse stands in the centre.",
        "The horse wears a red saddle.",
    ]


def test_critic_asks_for_json_that_parses_once_filled_in():
    rendered = load_prompt("critic").render(fact="The horse is white.", caption="A horse.")
    line = next(line for line in rendered.splitlines() if line.startswith('{"verdict"'))
    # the prompt shows the choices; a model replies with one of them
    reply = line.replace('"consistent" or "inconsistent" or "unverifiable"', '"inconsistent"')
    reply = reply.replace("the statement corrected to match the image, or null", "A brown horse.")
    verdict = parse_verdict(reply)
    assert verdict.verdict == "inconsistent"
    assert verdict.correction == "A brown horse."


@pytest.mark.parametrize(
    "name", ["caption_fusion", "caption_objective", "caption_formal_analysis", "rewrite"]
)
def test_caption_prompts_ask_for_the_text_alone(name):
    # clean_caption copes with chatter, but the prompt should not invite it
    text = load_prompt(name).text
    assert re.search(r"Reply with (the|these) .*only", text)
    assert clean_caption(text)  # sanity: a prompt is not mistaken for chatter and emptied
