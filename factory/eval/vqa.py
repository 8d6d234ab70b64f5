"""Museum QA scoring (MUSEUM-65): precision and recall, complete and partial, per category.

An answer is a set of values ("oil and tempera on panel" -> {"oil", "tempera on panel"}).
- complete match: a value equals a reference value once case, accents, punctuation and
  articles are ignored;
- partial match: the values share a content word ("Pieter Bruegel" ~ "Bruegel the Elder").
Precision = matched predicted values / predicted values; recall = matched reference values
/ reference values, both summed over all questions (micro), overall and per category.
A question the image cannot answer has the reference value "cannot tell"; a prediction
that says so in any of the ways the QA parser recognises ("Unknown", "It is not visible",
"Cannot tell from the image") is correct, and the same words on an answerable question are
wrong. BLEU-1..4 of the answers comes from pycocoevalcap on PTB tokens.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from factory.text.normalise import words
from factory.text.parse.parse_errors import CANNOT_TELL
from factory.text.parse.qa import normalise_answer

ABSTAIN = "cannot tell"
_SEPARATORS = re.compile(r"\s*(?:[,;/&]|\band\b|\bor\b)\s*", re.IGNORECASE)
_ARTICLES = frozenset({"a", "an", "the"})
# function words that alone do not make two answers overlap
_STOP_WORDS = _ARTICLES | frozenset(
    ("of", "in", "on", "at", "to", "by", "for", "with", "from", "and", "or", "as")
    + ("is", "are", "was", "were", "it", "its", "this", "that")
)


@dataclass(frozen=True)
class QAItem:
    """One question of one image: the answer given, or the accepted reference answers."""

    image_id: str
    question: str
    answers: tuple[str, ...]  # a prediction has one; a reference may accept several
    category: str = "unknown"
    answerable: bool | None = None  # None: decided from the reference answer itself


@dataclass
class _Tally:
    questions: int = 0
    exact: int = 0
    predicted: int = 0
    reference: int = 0
    complete_p: int = 0
    complete_r: int = 0
    partial_p: int = 0
    partial_r: int = 0

    def add(self, other: _Tally) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def summary(self) -> dict[str, float | int]:
        return {
            "questions": self.questions,
            "exact_match": _ratio(self.exact, self.questions),
            "complete_precision": _ratio(self.complete_p, self.predicted),
            "complete_recall": _ratio(self.complete_r, self.reference),
            "partial_precision": _ratio(self.partial_p, self.predicted),
            "partial_recall": _ratio(self.partial_r, self.reference),
        }


def answer_values(answer: str) -> list[str]:
    """The normalised values of an answer; an abstention is the single value ABSTAIN."""
    if abstains(answer):
        return [ABSTAIN]
    values = []
    for part in _SEPARATORS.split(answer):
        value = " ".join(word for word in words(part) if word not in _ARTICLES)
        if value and value not in values:
            values.append(value)
    return values


def abstains(answer: str) -> bool:
    return normalise_answer(answer or "") == CANNOT_TELL


def _content(value: str) -> set[str]:
    return {word for word in value.split() if word not in _STOP_WORDS}


def _matches(value: str, others: Sequence[str], partial: bool) -> bool:
    if partial and value != ABSTAIN:
        return any(_content(value) & _content(other) for other in others if other != ABSTAIN)
    return value in others


def score_pair(prediction: str, references: Sequence[str]) -> _Tally:
    """The tally of one question against the best-matching accepted reference answer."""
    predicted = answer_values(prediction)
    best: tuple | None = None
    for reference in references:
        gold = answer_values(reference)
        tally = _Tally(
            questions=1,
            exact=int(sorted(predicted) == sorted(gold)),
            predicted=len(predicted),
            reference=len(gold),
            complete_p=sum(_matches(value, gold, False) for value in predicted),
            complete_r=sum(_matches(value, predicted, False) for value in gold),
            partial_p=sum(_matches(value, gold, True) for value in predicted),
            partial_r=sum(_matches(value, predicted, True) for value in gold),
        )
        rank = (tally.exact, tally.complete_p + tally.complete_r, tally.partial_p + tally.partial_r)
        if best is None or rank > best[0]:
            best = (rank, tally)
    assert best is not None
    return best[1]


def question_key(image_id: str, question: str) -> tuple[str, str]:
    return str(image_id), " ".join(words(question))


def score_vqa(
    predictions: Iterable[QAItem], references: Iterable[QAItem], bleu: bool = True
) -> dict:
    """Overall, per-category and answerable/unanswerable numbers; questions are matched by
    image id and question text (case and punctuation ignored)."""
    gold = {question_key(item.image_id, item.question): item for item in references}
    given = {question_key(item.image_id, item.question): item for item in predictions}
    overall, by_category = _Tally(), defaultdict(_Tally)
    split = {True: _Tally(), False: _Tally()}
    abstained = {True: 0, False: 0}
    pairs: dict[str, tuple[str, list[str]]] = {}
    for key, reference in gold.items():
        prediction = given.get(key)
        answer = prediction.answers[0] if prediction and prediction.answers else ""
        tally = score_pair(answer, reference.answers)
        answerable = _answerable(reference)
        for target in (overall, by_category[reference.category], split[answerable]):
            target.add(tally)
        abstained[answerable] += abstains(answer)
        pairs[f"{key[0]}\t{key[1]}"] = (answer, list(reference.answers))
    result = {
        **overall.summary(),
        "unmatched_predictions": len(set(given) - set(gold)),
        "missing_predictions": len(set(gold) - set(given)),
        "per_category": {name: t.summary() for name, t in sorted(by_category.items())},
        "answerable": split[True].summary(),
        "unanswerable": split[False].summary(),
        # share of unanswerable questions answered "cannot tell" (higher is better), and of
        # answerable ones wrongly answered so (lower is better)
        "unanswerable_abstention_rate": _ratio(abstained[False], split[False].questions),
        "answerable_abstention_rate": _ratio(abstained[True], split[True].questions),
    }
    if bleu and pairs:
        result.update(_answer_bleu(pairs))
    return result


def _answerable(reference: QAItem) -> bool:
    if reference.answerable is not None:
        return reference.answerable
    return not any(abstains(answer) for answer in reference.answers)


def _answer_bleu(pairs: dict[str, tuple[str, list[str]]]) -> dict[str, float]:
    from pycocoevalcap.bleu.bleu import Bleu

    from factory.eval.tokenize import tokenize_captions

    def canonical(answer: str) -> str:
        return ABSTAIN if abstains(answer) else answer

    hypotheses = tokenize_captions({k: [canonical(a)] for k, (a, _) in pairs.items()}, "ptb-python")
    gold = tokenize_captions(
        {k: [canonical(r) for r in refs] for k, (_, refs) in pairs.items()}, "ptb-python"
    )
    scores, _ = Bleu(4).compute_score(gold, hypotheses, verbose=0)
    return {f"BLEU-{n}": float(score) for n, score in enumerate(scores, 1)}


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None
