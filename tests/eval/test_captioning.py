"""Caption metrics agree with pycocoevalcap run the COCO way, on 52 hand-written sets."""

from __future__ import annotations

import pytest

from factory.eval.captioning import (
    CAPTION_METRICS,
    LIGHT_METRICS,
    check_pairs,
    score_captions,
    score_captions_detailed,
)
from factory.eval.tokenize import java_ptb_tokens, python_ptb_tokens
from tests.eval.caption_fixture import CAPTION_SETS
from tests.eval.conftest import needs_java

PREDICTIONS = {key: candidate for key, (candidate, _) in CAPTION_SETS.items()}
REFERENCES = {key: refs for key, (_, refs) in CAPTION_SETS.items()}
# the names pycocoevalcap's COCOEvalCap gives them
COCO_NAMES = {
    "BLEU-1": "Bleu_1",
    "BLEU-2": "Bleu_2",
    "BLEU-3": "Bleu_3",
    "BLEU-4": "Bleu_4",
    "METEOR": "METEOR",
    "ROUGE-L": "ROUGE_L",
    "CIDEr-D": "CIDEr",
}
TRICKY = [
    "A man's hat (red) isn't \"big\"; it's [small] & cheap!",
    "Mr. Smith went to St. Paul's at 3.5 p.m. on 1,000 horses...",
    "black-and-white photo -- of a dog/cat, 50% off $5 U.S.A. e.g. the end.",
    "She'd've said 'hello' to the 1920s' {art} cannot can't won't gonna",
    "Two horses.The sky",
    "café naïve \u2014 em dash \u2013 en dash \u2026 ellipsis \u201ccurly\u201d \u2018quotes\u2019",
    "1/2 of it; 10:30; x=y+z; #tag @user ~tilde *star*",
    "pre-19th-century Dutch oil-on-canvas, c. 1650 A.D.",
]


def coco_reference_scores() -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """pycocoevalcap exactly as COCOEvalCap.evaluate runs it: PTB tokens, then each scorer."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": r} for r in v] for k, v in REFERENCES.items()})
    res = tokenizer.tokenize({k: [{"caption": v}] for k, v in PREDICTIONS.items()})
    corpus: dict[str, float] = {}
    per_image: dict[str, dict[str, float]] = {key: {} for key in gts}
    for scorer, names in [
        (Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]),
        (Meteor(), ["METEOR"]),
        (Rouge(), ["ROUGE_L"]),
        (Cider(), ["CIDEr"]),
    ]:
        score, scores = scorer.compute_score(gts, res)
        if len(names) == 1:
            score, scores = [score], [scores]
        for name, value, values in zip(names, score, scores, strict=True):
            corpus[name] = value
            for key, one in zip(gts.keys(), values, strict=True):
                per_image[key][name] = one
    return corpus, per_image


@pytest.fixture(scope="module")
def coco():
    return coco_reference_scores()


def test_fixture_has_fifty_sets_with_several_references():
    assert len(CAPTION_SETS) >= 50
    assert all(len(refs) >= 3 for refs in REFERENCES.values())


@needs_java
def test_python_ptb_tokens_equal_stanford_ptb_tokens():
    texts = {key: [candidate, *refs] for key, (candidate, refs) in CAPTION_SETS.items()}
    texts["tricky"] = TRICKY
    java = java_ptb_tokens(texts)
    for key, captions in texts.items():
        assert [" ".join(python_ptb_tokens(text)) for text in captions] == java[key]


@needs_java
@pytest.mark.parametrize("tokenizer", ["ptb-java", "ptb-python"])
def test_metrics_equal_pycocoevalcap(coco, tokenizer):
    corpus, per_image = coco
    metrics = CAPTION_METRICS if tokenizer == "ptb-java" else LIGHT_METRICS
    ours = score_captions_detailed(PREDICTIONS, REFERENCES, metrics, tokenizer)
    compared = [name for name in COCO_NAMES if name in metrics]
    assert len(compared) == (7 if tokenizer == "ptb-java" else 6)
    for name in compared:
        assert ours.corpus[name] == pytest.approx(corpus[COCO_NAMES[name]], abs=1e-6), name
        for key in PREDICTIONS:
            expected = per_image[key][COCO_NAMES[name]]
            assert ours.per_image[key][name] == pytest.approx(expected, abs=1e-6), (name, key)


def test_light_metrics_need_no_java_and_are_in_range():
    scores = score_captions(PREDICTIONS, REFERENCES)
    assert list(scores) == list(LIGHT_METRICS)
    assert all(0.0 < value < 1.0 for name, value in scores.items() if name != "CIDEr-D")
    # unrelated candidates (img-47) score below near copies (img-01) on every metric
    worst = score_captions_detailed(PREDICTIONS, REFERENCES).per_image
    assert worst["img-47"]["ROUGE-1"] < worst["img-01"]["ROUGE-1"]
    assert worst["img-47"]["CIDEr-D"] < worst["img-01"]["CIDEr-D"]


def test_a_prediction_equal_to_a_reference_scores_one():
    predictions = {"a": "A red horse stands in a green field near the old wooden barn."}
    references = {"a": [predictions["a"], "Cows in a field."]}
    scores = score_captions(predictions, references)
    for name in ("BLEU-1", "BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L", "ROUGE-Lsum", "GLEU"):
        assert scores[name] == pytest.approx(1.0, abs=1e-6), name


def test_rouge_lsum_scores_sentence_by_sentence():
    # two sentences swapped: the summary-level LCS matches both, the plain LCS only one
    predictions = {"a": "The sky is blue. A horse runs."}
    references = {"a": ["A horse runs. The sky is blue."]}
    scores = score_captions(predictions, references, ["ROUGE-1", "ROUGE-Lsum"])
    assert scores["ROUGE-Lsum"] == pytest.approx(1.0)
    assert scores["ROUGE-1"] == pytest.approx(1.0)
    plain = score_captions(predictions, references, ["ROUGE-L"])["ROUGE-L"]
    assert plain < 0.7


def test_pairs_are_counted_and_bad_requests_refused():
    assert check_pairs({"a": "x", "b": "y"}, {"a": ["x"], "c": ["z"], "d": []}) == {
        "scored": 1,
        "without_reference": 1,
        "without_prediction": 1,
    }
    with pytest.raises(ValueError, match="unknown caption metrics"):
        score_captions({"a": "x"}, {"a": ["x"]}, ["SPICE"])
    with pytest.raises(ValueError, match="no image id"):
        score_captions({"a": "x"}, {"b": ["x"]})


def test_rouge_with_memoised_tokens_equals_rouge_score_defaults():
    from rouge_score.rouge_scorer import RougeScorer

    from factory.eval.captioning import sentence_lines

    for stemmer in (True, False):
        ours = score_captions_detailed(
            PREDICTIONS, REFERENCES, ["ROUGE-1", "ROUGE-2", "ROUGE-Lsum"], rouge_stemmer=stemmer
        )
        plain = RougeScorer(["rouge1", "rouge2", "rougeLsum"], use_stemmer=stemmer)
        for key in PREDICTIONS:
            targets = [sentence_lines(ref) for ref in REFERENCES[key]]
            expected = plain.score_multi(targets, sentence_lines(PREDICTIONS[key]))
            got = ours.per_image[key]
            assert got["ROUGE-1"] == expected["rouge1"].fmeasure
            assert got["ROUGE-2"] == expected["rouge2"].fmeasure
            assert got["ROUGE-Lsum"] == expected["rougeLsum"].fmeasure


def test_an_empty_prediction_scores_zero_without_failing_the_batch():
    # a training model early on often generates nothing
    predictions = {"a": "", "b": "a horse"}
    references = {"a": ["two boats"], "b": ["a horse in a field"]}
    scores = score_captions_detailed(predictions, references)
    assert scores.per_image["a"]["ROUGE-L"] == 0.0 and scores.per_image["a"]["CIDEr-D"] == 0.0
    assert scores.per_image["a"]["ROUGE-1"] == 0.0 and scores.per_image["b"]["ROUGE-L"] > 0.0
