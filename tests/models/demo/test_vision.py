"""Tiny offline CLIP / OWL models: complete HF directories that load through Auto classes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoModelForZeroShotObjectDetection, AutoProcessor

from factory.models.demo import vision as demo_vision
from factory.models.weights import BUILTIN_MODELS, resolve_model_path
from tests.models.demo.saved_weights import differing, weights

IMAGE = Image.new("RGB", (120, 70), (200, 30, 30))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> str:
    return demo_vision.build_tiny_clip(str(tmp_path_factory.mktemp("clip") / "model"))


@pytest.fixture(scope="module")
def owlvit_dir(tmp_path_factory) -> str:
    return demo_vision.build_tiny_owlvit(str(tmp_path_factory.mktemp("owlvit") / "model"))


@pytest.fixture(scope="module")
def owlv2_dir(tmp_path_factory) -> str:
    return demo_vision.build_tiny_owlv2(str(tmp_path_factory.mktemp("owlv2") / "model"))


def test_clip_round_trips_through_auto_classes(clip_dir):
    model = AutoModel.from_pretrained(clip_dir, use_safetensors=True)
    processor = AutoProcessor.from_pretrained(clip_dir)
    assert type(model).__name__ == "CLIPModel"
    assert type(processor).__name__ == "CLIPProcessor"
    assert type(processor.tokenizer).__name__ == "CLIPTokenizer"
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    texts = ["a photo of a horse", "a vase"]
    inputs = processor(text=texts, images=[IMAGE], padding=True, return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape[1:]) == (3, 32, 32)
    with torch.no_grad():
        logits = model(**inputs).logits_per_image
    assert logits.shape == (1, 2) and torch.isfinite(logits).all()


def test_tokenizer_encodes_any_text_and_ends_on_the_highest_id(clip_dir):
    tokenizer = AutoProcessor.from_pretrained(clip_dir).tokenizer
    assert tokenizer.eos_token_id == len(tokenizer) - 1  # OWL pools at argmax(input_ids)
    ids = tokenizer("A gilded ünïcode 漢字 VASE!")["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.eos_token_id not in ids[1:-1]  # no byte fell back to the unknown token
    assert tokenizer.decode(tokenizer("a red vase")["input_ids"], skip_special_tokens=True) == (
        "a red vase"
    )


def test_owlvit_round_trips_and_detects_one_box_per_patch(owlvit_dir):
    model = AutoModelForZeroShotObjectDetection.from_pretrained(owlvit_dir, use_safetensors=True)
    processor = AutoProcessor.from_pretrained(owlvit_dir)
    assert type(model).__name__ == "OwlViTForObjectDetection"
    inputs = processor(text=[["a horse", "a vase"]], images=[IMAGE], return_tensors="pt")
    assert inputs["input_ids"].shape == (2, demo_vision.OWL_TEXT_TOKENS)
    with torch.no_grad():
        outputs = model(**inputs)
    patches = (demo_vision.IMAGE_SIZE // demo_vision.PATCH_SIZE) ** 2
    assert outputs.logits.shape == (1, patches, 2)
    # small random heads keep each box near its own patch instead of covering the image
    boxes = {tuple(box) for box in outputs.pred_boxes[0].round(decimals=2).tolist()}
    assert len(boxes) == patches


def test_owlv2_round_trips_through_auto_classes(owlv2_dir):
    model = AutoModelForZeroShotObjectDetection.from_pretrained(owlv2_dir, use_safetensors=True)
    processor = AutoProcessor.from_pretrained(owlv2_dir)
    assert type(model).__name__ == "Owlv2ForObjectDetection"
    assert type(processor).__name__ == "Owlv2Processor"
    if importlib.util.find_spec("scipy") is None:
        with pytest.raises(ImportError, match="scipy"):
            processor(text=[["a horse"]], images=[IMAGE], return_tensors="pt")
        return
    inputs = processor(text=[["a horse"]], images=[IMAGE], return_tensors="pt")
    with torch.no_grad():
        assert model(**inputs).pred_boxes.shape == (1, 16, 4)


@pytest.mark.parametrize("build", [demo_vision.build_tiny_clip, demo_vision.build_tiny_owlvit])
def test_same_seed_same_model_other_seed_other_weights(build, tmp_path):
    first = build(str(tmp_path / "first"), seed=0)
    again = build(str(tmp_path / "again"), seed=0)
    other = build(str(tmp_path / "other"), seed=1)
    assert differing(weights(first), weights(again)) == []
    tokenizer = (Path(first) / "tokenizer.json").read_bytes()
    assert (Path(again) / "tokenizer.json").read_bytes() == tokenizer
    assert differing(weights(first), weights(other))


def test_building_leaves_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    demo_vision.build_tiny_owlvit(str(tmp_path / "model"), seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_ensure_builds_once_and_leaves_no_staging(tmp_path):
    target = tmp_path / "cache" / "clip"
    assert demo_vision.ensure_tiny_clip(str(target)) == str(target)
    weights = target / "model.safetensors"
    first_build = weights.stat().st_mtime_ns
    assert demo_vision.ensure_tiny_clip(str(target)) == str(target)
    assert weights.stat().st_mtime_ns == first_build
    assert [entry.name for entry in target.parent.iterdir()] == ["clip"]


def test_builtin_names_build_into_the_cache(tmp_path):
    assert {"tiny-clip", "tiny-owlv2", "tiny-owlvit"} <= set(BUILTIN_MODELS)
    local = resolve_model_path("builtin://tiny-clip", str(tmp_path))
    assert Path(local, "model.safetensors").is_file()
    assert Path(local).is_relative_to(tmp_path)
    assert AutoModel.from_pretrained(local).config.model_type == "clip"
