"""What the parsers return and raise: ParseError, the result types and the verdict labels."""

from __future__ import annotations

from dataclasses import dataclass

from factory.text.normalise import prepare

CONSISTENT = "consistent"
INCONSISTENT = "inconsistent"
UNVERIFIABLE = "unverifiable"
CANNOT_TELL = "cannot tell from the image"


class ParseError(ValueError):
    """A reply with nothing usable: `reason` is a short code, `detail` says why."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Question:
    dimension: str | None
    question: str


@dataclass(frozen=True)
class Verdict:
    verdict: str
    reason: str
    correction: str | None


@dataclass(frozen=True)
class QAPair:
    category: str
    question: str
    answer: str


def _require_text(text: str | None) -> str:
    prepared = prepare(text)
    if not prepared:
        raise ParseError("empty", "the reply is empty")
    return prepared
