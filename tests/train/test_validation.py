"""Validation metrics: generation continues the training prompt; scores per (image, prompt)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from factory.train.collate import collate_sft
from factory.train.data import PreferenceExample, SFTExample
from factory.train.generate import generate_text
from factory.train.methods import MethodConfig, load_for_training
from factory.train.validation import ValidationMetricsConfig, references, validation_metrics

MODELS = {"llava": "builtin://tiny-llava", "blip": "builtin://tiny-blip"}
CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("family", "task", "prompt", "target"),
    [
        ("llava", "caption", "Describe the artwork.", "a red vase of clay"),
        ("blip", "caption", "a picture of", "a red vase of clay"),
        ("blip", "qa", "what colour is the vase?", "red"),
    ],
)
def test_an_overfit_model_generates_its_target_from_the_training_prompt(
    family, task, prompt, target, tmp_path
):
    torch.manual_seed(0)
    trainable = load_for_training(
        MODELS[family],
        family,
        task,
        MethodConfig(method="full", dropout=0.0),
        cache_dir=str(tmp_path),
        with_reference=False,
    )
    image = Image.new("RGB", (48, 48), (200, 20, 20))
    batch = collate_sft(trainable.processor, family, [(image, prompt, target)], 64, task=task)
    optimizer = torch.optim.AdamW(
        [p for p in trainable.model.parameters() if p.requires_grad], lr=2e-3
    )
    for _ in range(100):
        trainable.model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    trainable.model.eval()
    text = generate_text(trainable.model, trainable.processor, family, task, image, prompt, 16, CPU)
    assert text.lower() == target


def sft(uri: str, prompt: str, target: str) -> SFTExample:
    return SFTExample(image_uri=uri, prompt=prompt, target=target, group=uri)


EXAMPLES = [
    sft("a.png", "Describe.", "a red boat on a grey sea"),
    sft("a.png", "Describe.", "a small red boat at sea"),  # a second reference
    sft("a.png", "In one line.", "red boat"),  # another prompt: another pair
    sft("b.png", "Describe.", "two dogs run on a sandy beach"),
]


def test_references_group_targets_by_image_and_prompt():
    gold = references(
        [*EXAMPLES, PreferenceExample("c.png", "Describe.", "chosen text", "bad text", "c.png")]
    )
    assert gold[("a.png", "Describe.")] == ["a red boat on a grey sea", "a small red boat at sea"]
    assert gold[("a.png", "In one line.")] == ["red boat"]
    assert gold[("c.png", "Describe.")] == ["chosen text"]  # never the rejected one


def test_scores_are_perfect_for_a_reference_and_lower_for_noise():
    config = ValidationMetricsConfig(metrics=["BLEU-1", "ROUGE-L"])
    gold = references(EXAMPLES)
    perfect = validation_metrics(lambda uri, prompt: gold[(uri, prompt)][0], config, EXAMPLES, 0, 1)
    assert perfect == {"val_BLEU-1": pytest.approx(1.0), "val_ROUGE-L": pytest.approx(1.0)}
    noise = validation_metrics(lambda uri, prompt: "zebra zebra", config, EXAMPLES, 0, 1)
    assert noise["val_BLEU-1"] < 0.1 and noise["val_ROUGE-L"] < 0.1


def test_generation_is_capped_and_skipped_without_metrics():
    calls = []

    def generate(uri, prompt):
        calls.append((uri, prompt))
        return "red boat"

    capped = ValidationMetricsConfig(metrics=["BLEU-1"], max_examples=2)
    validation_metrics(generate, capped, EXAMPLES, 0, 1)
    assert len(calls) == 2
    assert validation_metrics(generate, ValidationMetricsConfig(), EXAMPLES, 0, 1) == {}
    assert len(calls) == 2


def test_unknown_metric_names_are_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown metrics.*CIDEr-D"):
        ValidationMetricsConfig(metrics=["CIDEr"])
