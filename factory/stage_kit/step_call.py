"""generate -> parse -> reject-on-failure, the step every model-calling stage repeats.

A structured step (QA pairs, questions, facts, verdicts) asks for JSON under its schema.
The reply is validated against the step's pydantic model first; only an engine that cannot
constrain decoding (a plugin, a server without json_schema) gets the lenient parser as a
fallback, since a constraining engine's invalid reply means something broke. A reply cut
off at max_new_tokens is rejected as `<step>_truncated`: a cut JSON reply is broken, and
parsing what is left would keep a silently shortened list. Free-text steps (captions,
expanded and rewritten captions) clean the reply and keep a cut-off one by default.

Every outcome says how decoding ended: the rejection's detail names the finish reason, and
the lineage carries it (`finish_reason`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from factory import records
from factory.models.engine import Completion
from factory.stage_kit.chat_step import PromptedEngine
from factory.text.normalise import snippet
from factory.text.parse import ParseError, clean_caption
from factory.text.schemas import json_schema

T = TypeVar("T")
Calls = Sequence[tuple[dict[str, Any], bytes | None]]


@dataclass(frozen=True)
class Structured(Generic[T]):
    """One structured step: its reason prefix, reply model and how values come out."""

    name: str  # rejection reasons are f"{name}_{code}"
    reply: type[BaseModel]
    to_value: Callable[[Any, str], T]  # validated reply, raw text -> value (may ParseError)
    lenient: Callable[[str], T]  # raw text -> value, for engines that cannot constrain


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """A parsed value with the lineage of the call that made it, or why it was rejected."""

    value: T | None
    lineage: dict[str, Any] | None
    rejection: records.Rejection | None
    completion: Completion

    @property
    def ok(self) -> bool:
        return self.rejection is None


def constrains(prompted: PromptedEngine) -> bool:
    return bool(getattr(prompted.engine, "constrains_json", False))


def call_structured(
    prompted: PromptedEngine, calls: Calls, step: Structured[T]
) -> list[Outcome[T]]:
    """One outcome per call, in order, from one engine batch under the step's schema."""
    completions = prompted.complete(calls, json_schema=json_schema(step.reply))
    constrained = constrains(prompted)
    return [_structured(prompted, step, c, constrained) for c in completions]


def call_text(
    prompted: PromptedEngine, calls: Calls, name: str, reject_truncated: bool = False
) -> list[Outcome[str]]:
    """One cleaned caption-like text per call, in order."""
    outcomes = []
    for completion in prompted.complete(calls):
        if reject_truncated and completion.finish_reason == "length":
            outcomes.append(_truncated(name, completion))
            continue
        try:
            text = clean_caption(completion.text)
        except ParseError as error:
            outcomes.append(_rejected(name, error, completion))
            continue
        outcomes.append(Outcome(text, lineage(prompted, completion), None, completion))
    return outcomes


def lineage(prompted: PromptedEngine, completion: Completion) -> dict[str, Any]:
    """The step's lineage, with this reply's finish reason."""
    return {**prompted.lineage, "finish_reason": completion.finish_reason}


def _structured(
    prompted: PromptedEngine, step: Structured[T], completion: Completion, constrained: bool
) -> Outcome[T]:
    if completion.finish_reason == "length":
        return _truncated(step.name, completion)
    text = completion.text
    try:
        reply = step.reply.model_validate_json(text)
    except ValidationError as invalid:
        if constrained:
            detail = f"{_first_error(invalid)} in {snippet(text)}"
            return _rejected(step.name, ParseError("invalid_json", detail), completion)
        reply = None
    try:
        value = step.lenient(text) if reply is None else step.to_value(reply, text)
    except ParseError as error:
        return _rejected(step.name, error, completion)
    return Outcome(value, lineage(prompted, completion), None, completion)


def _first_error(invalid: ValidationError) -> str:
    error = invalid.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "reply"
    return f"{where}: {error['msg']}"


def _truncated(name: str, completion: Completion) -> Outcome[Any]:
    tokens = completion.completion_tokens
    spent = f"{tokens} tokens" if tokens is not None else "max_new_tokens"
    detail = f"finish_reason length: cut off after {spent}: {snippet(completion.text)}"
    return Outcome(None, None, records.Rejection(f"{name}_truncated", detail), completion)


def _rejected(name: str, error: ParseError, completion: Completion) -> Outcome[Any]:
    detail = f"{error.detail} (finish_reason {completion.finish_reason})"
    return Outcome(None, None, records.Rejection(f"{name}_{error.reason}", detail), completion)
