"""Caption metrics against several references per image: the numbers papers report.

BLEU-1..4, METEOR, ROUGE-L and CIDEr-D come from pycocoevalcap (the COCO caption evaluation
code) on PTB tokens, so they equal published COCO-style numbers. ROUGE-1, ROUGE-2 and
ROUGE-Lsum come from Google's rouge-score on the raw texts (its own tokeniser, best F1 over
the references); GLEU from nltk's corpus GLEU on the PTB tokens. METEOR needs Java; every
other metric runs in plain Python (`LIGHT_METRICS`), which is what training validation uses.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from factory.eval.tokenize import Tokenizer, tokenize_captions

BLEU = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4")
ROUGE_SCORE = {"ROUGE-1": "rouge1", "ROUGE-2": "rouge2", "ROUGE-Lsum": "rougeLsum"}
CAPTION_METRICS = (
    *BLEU,
    "METEOR",
    "ROUGE-1",
    "ROUGE-2",
    "ROUGE-L",
    "ROUGE-Lsum",
    "CIDEr-D",
    "GLEU",
)
JAVA_METRICS = frozenset({"METEOR"})
LIGHT_METRICS = tuple(name for name in CAPTION_METRICS if name not in JAVA_METRICS)
# a sentence ends at . ! or ? followed by space; rougeLsum scores sentence by sentence
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class CaptionScores:
    """Corpus-level numbers and the per-image ones behind them (where the metric has them)."""

    corpus: dict[str, float]
    per_image: dict[str, dict[str, float]] = field(default_factory=dict)
    images: int = 0
    tokenizer: str = ""


def score_captions(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    metrics: Sequence[str] = LIGHT_METRICS,
    tokenizer: Tokenizer = "ptb-python",
    rouge_stemmer: bool = True,
) -> dict[str, float]:
    """{metric: corpus score} for one prediction and several references per image id.

    Scores the image ids that have both; `check_pairs` says which are missing. Scores are
    on pycocoevalcap's scale (0..1; CIDEr-D 0..10).
    """
    return score_captions_detailed(
        predictions, references, metrics, tokenizer, rouge_stemmer
    ).corpus


def score_captions_detailed(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    metrics: Sequence[str] = LIGHT_METRICS,
    tokenizer: Tokenizer = "ptb-python",
    rouge_stemmer: bool = True,
) -> CaptionScores:
    unknown = sorted(set(metrics) - set(CAPTION_METRICS))
    if unknown:
        raise ValueError(f"unknown caption metrics {unknown}; known: {list(CAPTION_METRICS)}")
    ids = sorted(set(predictions) & {key for key, refs in references.items() if refs})
    if not ids:
        raise ValueError("no image id has both a prediction and a reference")
    result = CaptionScores(corpus={}, per_image={key: {} for key in ids}, images=len(ids))
    result.tokenizer = tokenizer
    wanted = set(metrics)
    coco = wanted & {*BLEU, "METEOR", "ROUGE-L", "CIDEr-D", "GLEU"}
    if coco:
        hypotheses = tokenize_captions({key: [predictions[key]] for key in ids}, tokenizer)
        gold = tokenize_captions({key: list(references[key]) for key in ids}, tokenizer)
        _coco_metrics(coco, gold, hypotheses, ids, result)
    rouge = [name for name in ROUGE_SCORE if name in wanted]
    if rouge:
        _rouge_score_metrics(rouge, predictions, references, ids, rouge_stemmer, result)
    result.corpus = {name: result.corpus[name] for name in CAPTION_METRICS if name in wanted}
    return result


def check_pairs(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> dict[str, int]:
    """How many image ids can be scored, and how many lack a reference or a prediction."""
    with_refs = {key for key, refs in references.items() if refs}
    return {
        "scored": len(set(predictions) & with_refs),
        "without_reference": len(set(predictions) - with_refs),
        "without_prediction": len(with_refs - set(predictions)),
    }


def _coco_metrics(
    wanted: set[str],
    gold: dict[str, list[str]],
    hypotheses: dict[str, list[str]],
    ids: list[str],
    result: CaptionScores,
) -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    if wanted & set(BLEU):
        corpus, per_image = Bleu(4).compute_score(gold, hypotheses, verbose=0)
        for n, name in enumerate(BLEU):
            _store(result, name, corpus[n], per_image[n], ids)
    if "ROUGE-L" in wanted:
        corpus, per_image = Rouge().compute_score(gold, hypotheses)
        _store(result, "ROUGE-L", corpus, per_image, ids)
    if "CIDEr-D" in wanted:
        # pycocoevalcap's Cider is CIDEr-D: Gaussian length penalty, clipped counts, x10
        corpus, per_image = Cider().compute_score(gold, hypotheses)
        _store(result, "CIDEr-D", corpus, per_image, ids)
    if "METEOR" in wanted:
        corpus, per_image = _meteor(gold, hypotheses)
        _store(result, "METEOR", corpus, per_image, ids)
    if "GLEU" in wanted:
        result.corpus["GLEU"] = _gleu(gold, hypotheses, ids)


def _meteor(gold: dict[str, list[str]], hypotheses: dict[str, list[str]]):
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()  # one JVM per call; its destructor ends it
    try:
        return scorer.compute_score(gold, hypotheses)
    finally:
        del scorer


def _gleu(gold: dict[str, list[str]], hypotheses: dict[str, list[str]], ids: list[str]) -> float:
    from nltk.translate.gleu_score import corpus_gleu

    references = [[ref.split() for ref in gold[key]] for key in ids]
    return float(corpus_gleu(references, [hypotheses[key][0].split() for key in ids]))


def _rouge_score_metrics(
    names: list[str],
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    ids: list[str],
    stemmer: bool,
    result: CaptionScores,
) -> None:
    from rouge_score.rouge_scorer import RougeScorer

    from factory.eval.rouge_tokens import MemoRougeTokenizer

    types = [ROUGE_SCORE[name] for name in names]
    scorer = RougeScorer(types, tokenizer=MemoRougeTokenizer(stemmer))
    totals = dict.fromkeys(names, 0.0)
    for key in ids:
        # rougeLsum takes sentences one per line
        targets = [sentence_lines(ref) for ref in references[key]]
        scores = scorer.score_multi(targets, sentence_lines(predictions[key]))
        for name in names:
            value = scores[ROUGE_SCORE[name]].fmeasure
            result.per_image[key][name] = value
            totals[name] += value
    for name in names:
        result.corpus[name] = totals[name] / len(ids)


def sentence_lines(text: str) -> str:
    return "\n".join(part for part in _SENTENCE_END.split(text.strip()) if part)


def _store(result: CaptionScores, name: str, corpus, per_image, ids: list[str]) -> None:
    result.corpus[name] = float(corpus)
    for key, value in zip(ids, per_image, strict=True):
        result.per_image[key][name] = float(value)
