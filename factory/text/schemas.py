"""The JSON replies of the loop's structured steps, each declared once as a pydantic model.

QA pairs, expansion questions, atomic facts and critic verdicts. The labels a reply may use
(QA categories, question dimensions) and the limits it must keep (items per list,
characters per text) come from the stage's config, so each builder below makes the model
for one set of them (cached). Engines that can constrain decoding get `json_schema(model)`
and produce a reply that validates; the limits then bound the reply's length, so even a
model with nothing to say (the random-weight tiny ones) finishes inside its token budget.

`to_*` turn a validated reply into the values the lenient parsers return, with the same
clean-up (stripped text, "cannot tell" answers, duplicates dropped), raising ParseError
when nothing usable is left.
"""

from __future__ import annotations

import re
from enum import Enum
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from factory.text.normalise import fold, snippet, strip_inline_markdown
from factory.text.parse.parse_errors import ParseError, QAPair, Question
from factory.text.parse.parse_errors import Verdict as VerdictValue
from factory.text.parse.qa import normalise_answer

DEFAULT_MAX_CHARS = 400


class Verdict(str, Enum):
    """A critic's judgement of one fact against the image."""

    consistent = "consistent"
    inconsistent = "inconsistent"
    unverifiable = "unverifiable"


class _Strict(BaseModel):
    # additionalProperties: false, which OpenAI's strict json_schema mode requires
    model_config = ConfigDict(extra="forbid")


def _text(max_chars: int) -> Any:
    return Annotated[str, Field(min_length=1, max_length=max_chars)]


def _one_of(labels: tuple[str, ...]) -> Any:
    return Literal[labels]  # type: ignore[valid-type]


@lru_cache(maxsize=64)
def qa_reply(categories: tuple[str, ...], max_chars: int = DEFAULT_MAX_CHARS) -> type[BaseModel]:
    """{"pairs": [{"category", "question", "answer"}, ...]}: at most one pair per category."""
    pair = create_model(
        "QAPairReply",
        __base__=_Strict,
        category=(_one_of(categories), ...),
        question=(_text(max_chars), ...),
        answer=(_text(max_chars), ...),
    )
    pairs = Annotated[list[pair], Field(min_length=1, max_length=len(categories))]
    return create_model("QAReply", __base__=_Strict, pairs=(pairs, ...))


@lru_cache(maxsize=64)
def questions_reply(
    dimensions: tuple[str, ...], max_questions: int, max_chars: int = DEFAULT_MAX_CHARS
) -> type[BaseModel]:
    """{"questions": [{"dimension", "question"}, ...]}."""
    question = create_model(
        "QuestionReply",
        __base__=_Strict,
        dimension=(_one_of(dimensions), ...),
        question=(_text(max_chars), ...),
    )
    questions = Annotated[list[question], Field(min_length=1, max_length=max_questions)]
    return create_model("QuestionsReply", __base__=_Strict, questions=(questions, ...))


@lru_cache(maxsize=64)
def facts_reply(max_facts: int, max_chars: int = DEFAULT_MAX_CHARS) -> type[BaseModel]:
    """{"facts": ["...", ...]}."""
    facts = Annotated[list[_text(max_chars)], Field(min_length=1, max_length=max_facts)]
    return create_model("FactsReply", __base__=_Strict, facts=(facts, ...))


@lru_cache(maxsize=16)
def verdict_reply(max_chars: int = DEFAULT_MAX_CHARS) -> type[BaseModel]:
    """{"verdict", "reason", "correction"}; correction is null unless inconsistent."""
    return create_model(
        "VerdictReply",
        __base__=_Strict,
        verdict=(Verdict, ...),
        reason=(_text(max_chars), ...),
        correction=(_text(max_chars) | None, ...),
    )


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema engines decode under (nested models as $defs)."""
    return model.model_json_schema()


# ------------------------------------------------------------------ reply -> values


def _clean(text: str) -> str:
    return " ".join(strip_inline_markdown(text).split())


def _key(text: str) -> str:
    return " ".join(re.findall(r"\w+", fold(text)))


def to_qa(reply: Any, raw: str) -> list[QAPair]:
    pairs: list[QAPair] = []
    seen: set[tuple[str, str]] = set()
    for pair in reply.pairs:
        question, answer = _clean(pair.question), normalise_answer(pair.answer)
        if question and answer and (pair.category, _key(question)) not in seen:
            seen.add((pair.category, _key(question)))
            pairs.append(QAPair(pair.category, question, answer))
    if not pairs:
        raise ParseError("no_pairs", f"no question-answer pairs in {snippet(raw)}")
    return pairs


def to_questions(reply: Any, raw: str) -> list[Question]:
    questions: list[Question] = []
    seen: set[str] = set()
    for item in reply.questions:
        question = _clean(item.question)
        if _key(question) and _key(question) not in seen:
            seen.add(_key(question))
            questions.append(Question(item.dimension, question[:1].upper() + question[1:]))
    if not questions:
        raise ParseError("no_questions", f"no questions in {snippet(raw)}")
    return questions


def to_facts(reply: Any, raw: str) -> list[str]:
    facts: list[str] = []
    seen: set[str] = set()
    for fact in (_clean(text) for text in reply.facts):
        if _key(fact) and _key(fact) not in seen:
            seen.add(_key(fact))
            facts.append(fact)
    if not facts:
        raise ParseError("no_facts", f"no facts in {snippet(raw)}")
    return facts


def to_verdict(reply: Any, raw: str) -> VerdictValue:
    label = reply.verdict.value
    correction = _clean(reply.correction) if reply.correction else None
    if label == Verdict.consistent.value:
        correction = None  # nothing to correct; a model sometimes repeats the fact here
    reason = _clean(reply.reason)
    return VerdictValue(label, reason[:1].upper() + reason[1:], correction or None)
