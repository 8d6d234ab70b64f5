"""CLIPScore / RefCLIPScore with the random-weight tiny CLIP, checked against its embeddings."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from factory.eval.clipscore import CLIP_WEIGHT, clip_scores, harmonic_mean

TINY_CLIP = "builtin://tiny-clip"


def png(colour) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def clip():
    pytest.importorskip("torch")
    from factory.models.clip import ClipModel

    return ClipModel(TINY_CLIP)


def test_clip_scores_follow_the_paper_formula(clip):
    predictions = {"a": "a red square", "b": "a blue square", "c": "no image for this one"}
    references = {"a": ["a red square", "red"], "b": ["a green field"]}
    images = {"a": png((250, 0, 0)), "b": png((0, 0, 250))}
    result = clip_scores(predictions, references, images, TINY_CLIP, prefix="A photo depicts ")
    assert result["images"] == 2
    pictures = [Image.open(io.BytesIO(images[k])).convert("RGB") for k in ("a", "b")]
    image_vectors = clip.embed_images(pictures)
    text_vectors = clip.embed_texts(
        ["A photo depicts a red square", "A photo depicts a blue square"]
    )
    expected = CLIP_WEIGHT * np.clip((image_vectors * text_vectors).sum(axis=1), 0, None)
    assert result["CLIPScore"] == pytest.approx(expected.mean(), abs=1e-5)
    # "a" has its own caption among the references: the text-text part is 1
    ref_a = harmonic_mean(np.array([expected[0]]), np.array([1.0]))[0]
    assert result["per_image"]["a"]["RefCLIPScore"] == pytest.approx(ref_a, abs=1e-5)
    assert 0.0 <= result["per_image"]["b"]["RefCLIPScore"] <= CLIP_WEIGHT


def test_harmonic_mean_is_zero_when_either_part_is():
    values = harmonic_mean(np.array([0.0, 1.0, 0.5]), np.array([0.7, 1.0, 0.0]))
    assert values.tolist() == [0.0, 1.0, 0.0]
