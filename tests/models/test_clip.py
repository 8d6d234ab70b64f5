"""ClipModel: unit embeddings, cached text embeddings, CLIP softmax and SigLIP sigmoid scores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from factory.models.clip import ClipModel
from factory.models.demo import vision as demo_vision
from factory.models.engine import ModelSource

LABELS = ["a photo of a horse", "a photo of a vase", "a photo of a coin"]


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    sizes = [(120, 80), (64, 64), (50, 140)]
    return [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> ClipModel:
    return ClipModel(demo_vision.build_tiny_clip(str(tmp_path_factory.mktemp("clip") / "m")))


@pytest.fixture(scope="module")
def siglip(tmp_path_factory) -> ClipModel:
    return ClipModel(demo_vision.build_tiny_siglip(str(tmp_path_factory.mktemp("siglip") / "m")))


def _reference_scores(model: ClipModel, images: list[Image.Image], texts: list[str]):
    """What the HF model's own forward says, for comparison."""
    padding = "max_length" if model.sigmoid else True
    inputs = model.processor(text=texts, images=images, padding=padding, return_tensors="pt")
    with torch.no_grad():
        logits = model.model(**inputs).logits_per_image
    return (logits.sigmoid() if model.sigmoid else logits.softmax(dim=-1)).numpy()


def test_image_embeddings_are_unit_float32_rows(clip):
    embeddings = clip.embed_images(_images())
    assert embeddings.shape == (3, clip.dim) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(embeddings[0], embeddings[1])


def test_text_embeddings_are_unit_rows_in_request_order(clip):
    embeddings = clip.embed_texts([LABELS[1], LABELS[0], LABELS[1]])
    assert embeddings.shape == (3, clip.dim) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(embeddings[0], embeddings[2])
    np.testing.assert_array_equal(embeddings[1], clip.embed_texts([LABELS[0]])[0])


def test_empty_requests_give_empty_matrices(clip):
    assert clip.embed_images([]).shape == (0, clip.dim)
    assert clip.embed_texts([]).shape == (0, clip.dim)


def test_each_text_is_encoded_once(clip, monkeypatch):
    encoded: list[list[str]] = []
    encode = clip._encode_texts

    def counting(texts):
        encoded.append(list(texts))
        return encode(texts)

    monkeypatch.setattr(clip, "_encode_texts", counting)
    first = clip.embed_texts(["a carved ivory box", "a gilded frame"])
    again = clip.embed_texts(["a gilded frame", "a carved ivory box", "a bronze bell"])
    assert encoded == [["a carved ivory box", "a gilded frame"], ["a bronze bell"]]
    np.testing.assert_array_equal(again[:2], first[::-1])


def test_long_texts_are_truncated_to_the_position_table(clip):
    long_text = "a very long description of a painted vase " * 40
    assert clip.embed_texts([long_text]).shape == (1, clip.dim)


def test_clip_scores_are_a_softmax_over_labels_as_the_model_computes(clip):
    images = _images()
    scores = clip.zero_shot(images, LABELS)
    assert not clip.sigmoid
    assert scores.shape == (3, 3) and scores.dtype == np.float32
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scores, _reference_scores(clip, images, LABELS), atol=1e-5)


def test_siglip_scores_are_independent_sigmoids_as_the_model_computes(siglip):
    images = _images()
    scores = siglip.zero_shot(images, LABELS)
    assert siglip.sigmoid
    np.testing.assert_allclose(scores, _reference_scores(siglip, images, LABELS), atol=1e-5)
    assert not np.allclose(scores.sum(axis=1), 1.0)
    # each label's score ignores the others, unlike a softmax
    np.testing.assert_allclose(siglip.zero_shot(images, LABELS[:1])[:, 0], scores[:, 0], atol=1e-6)


def test_sigmoid_applies_the_learned_bias(siglip, monkeypatch):
    image, text = np.eye(2, dtype=np.float32)[:1], np.eye(2, dtype=np.float32)
    monkeypatch.setattr(siglip, "logit_scale", 10.0)
    monkeypatch.setattr(siglip, "logit_bias", -10.0)
    # cosine 1 -> logit 0 -> 0.5; cosine 0 -> logit -10
    np.testing.assert_allclose(siglip.scores(image, text), [[0.5, 1 / (1 + np.exp(10))]], rtol=1e-6)


def test_dtype_comes_from_config(clip, tmp_path):
    half = ClipModel(
        demo_vision.build_tiny_clip(str(tmp_path / "m")), ModelSource(dtype="bfloat16")
    )
    assert half.model.dtype == torch.bfloat16 and clip.model.dtype == torch.float32
    embeddings = half.embed_images(_images())
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, rtol=1e-3)


def test_missing_weights_fail_loudly(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ClipModel(str(tmp_path / "nowhere"))
