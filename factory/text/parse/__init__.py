"""Typed values from what models reply: lists, questions, facts, verdicts, QA pairs, captions.

Models wrap the asked-for format in chatter ("Sure! Here are..."), number lists every way
there is, bold or bracket their labels, fence JSON in code blocks or break it. Each parser
accepts the format its prompt asks for plus those deviations, and raises ParseError (a
short `reason` code and a `detail` with a snippet of the reply) when nothing usable is
left, so a stage can reject the record with the same reason and detail.

Modules: `errors` (ParseError, the result types Question, Verdict and QAPair, the verdict
labels and CANNOT_TELL), `items` (list markers, headings, chatter, JSON lists and the
helpers the parsers share; parse_items), `facts` (parse_facts), `questions`
(parse_questions), `verdicts` (parse_verdict, normalise_verdict), `qa` (parse_qa,
normalise_answer), `captions` (clean_caption).
"""

from __future__ import annotations

from factory.text.parse.captions import clean_caption
from factory.text.parse.facts import parse_facts
from factory.text.parse.items import parse_items
from factory.text.parse.parse_errors import (
    CANNOT_TELL,
    CONSISTENT,
    INCONSISTENT,
    UNVERIFIABLE,
    ParseError,
    QAPair,
    Question,
    Verdict,
)
from factory.text.parse.qa import normalise_answer, parse_qa
from factory.text.parse.questions import parse_questions
from factory.text.parse.verdicts import normalise_verdict, parse_verdict

__all__ = [
    "CANNOT_TELL",
    "CONSISTENT",
    "INCONSISTENT",
    "UNVERIFIABLE",
    "ParseError",
    "QAPair",
    "Question",
    "Verdict",
    "clean_caption",
    "normalise_answer",
    "normalise_verdict",
    "parse_facts",
    "parse_items",
    "parse_qa",
    "parse_questions",
    "parse_verdict",
]
