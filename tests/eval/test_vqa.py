"""Museum QA scoring on hand-labelled questions, unanswerable ones included."""

from __future__ import annotations

import pytest

from factory.eval.vqa import ABSTAIN, QAItem, answer_values, score_vqa

# (image, category, question, accepted reference answers, prediction or None when missing)
CASES = [
    ("a", "material", "What is it made of?", ["oil on canvas"], "Oil on canvas."),
    ("a", "creator", "Who painted it?", ["Pieter Bruegel the Elder"], "Bruegel"),
    ("b", "material", "What materials?", ["oil and tempera on panel"], "oil"),
    ("b", "title", "What is the title?", ["cannot tell from the image"], "Unknown"),
    ("c", "creator", "Who made it?", ["Cannot tell"], "Vincent van Gogh"),
    ("c", "place", "Where was it made?", ["Japan"], "It is not visible."),
    ("d", "subject", "What is shown?", ["a horse", "horses"], "A horse"),
    ("d", "language", "What language is the text?", ["Latin"], "Greek"),
    ("e", "material", "What is the frame made of?", ["wood"], None),
]


def items():
    references = [QAItem(i, q, tuple(refs), c) for i, c, q, refs, _ in CASES]
    # predictions arrive with other casing and punctuation in the question
    predictions = [
        QAItem(i, q.upper().rstrip("?"), (p,)) for i, _, q, _, p in CASES if p is not None
    ]
    return predictions, references


def test_answer_values_split_normalise_and_abstain():
    assert answer_values("Oil and tempera, on the panel.") == ["oil", "tempera", "on panel"]
    assert answer_values("The image does not show the creator.") == [ABSTAIN]
    assert answer_values("Dürer") == ["durer"]


def test_overall_numbers_match_the_hand_count():
    predictions, references = items()
    result = score_vqa(predictions, references)
    assert result["questions"] == 9 and result["missing_predictions"] == 1
    assert result["exact_match"] == pytest.approx(3 / 9)
    # 8 predicted values, 10 reference values (oil / tempera on panel counts two)
    assert result["complete_precision"] == pytest.approx(4 / 8)
    assert result["complete_recall"] == pytest.approx(4 / 10)
    # "Bruegel" partially matches "Pieter Bruegel the Elder"
    assert result["partial_precision"] == pytest.approx(5 / 8)
    assert result["partial_recall"] == pytest.approx(5 / 10)


def test_per_category_and_unanswerable_questions():
    predictions, references = items()
    result = score_vqa(predictions, references)
    material = result["per_category"]["material"]
    assert material["questions"] == 3
    assert material["complete_precision"] == pytest.approx(2 / 2)
    assert material["complete_recall"] == pytest.approx(2 / 4)
    assert result["per_category"]["creator"]["partial_recall"] == pytest.approx(1 / 2)
    # "Unknown" for an unanswerable title is right; a named painter for one is wrong
    assert result["unanswerable"]["questions"] == 2
    assert result["unanswerable"]["exact_match"] == pytest.approx(1 / 2)
    assert result["unanswerable_abstention_rate"] == pytest.approx(1 / 2)
    # "It is not visible" for an answerable place is wrong
    assert result["answerable_abstention_rate"] == pytest.approx(1 / 7)
    assert result["answerable"]["exact_match"] == pytest.approx(2 / 7)


def test_explicit_answerable_flag_overrides_the_reference_text():
    reference = QAItem("x", "Who?", ("unknown",), "creator", answerable=True)
    result = score_vqa([QAItem("x", "Who?", ("Unknown",))], [reference], bleu=False)
    assert result["answerable_abstention_rate"] == 1.0 and result["unanswerable"]["questions"] == 0


def test_bleu_of_answers():
    predictions, references = items()
    perfect = [QAItem(r.image_id, r.question, (r.answers[0],)) for r in references]
    assert score_vqa(perfect, references)["BLEU-1"] == pytest.approx(1.0, abs=1e-6)
    assert score_vqa(perfect, references)["exact_match"] == 1.0
    assert 0.0 < score_vqa(predictions, references)["BLEU-1"] < 1.0
