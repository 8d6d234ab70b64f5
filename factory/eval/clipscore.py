"""CLIPScore and RefCLIPScore (Hessel et al., 2021) with whatever CLIP the config names.

CLIP-S(c, v) = 2.5 * max(cos(E_text(prefix + c), E_image(v)), 0)
RefCLIP-S = harmonic mean of CLIP-S and max(max_r cos(E_text(c), E_text(r)), 0)
The 2.5 rescales CLIP's typical cosines (about 0.2-0.4) towards [0, 1]; the prefix "A photo
depicts" is the one the paper found best. Both are means over the images given.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np

CLIP_WEIGHT = 2.5


def clip_scores(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    images: Mapping[str, bytes],
    model: str,
    prefix: str = "A photo depicts ",
) -> dict:
    """Corpus CLIP-S and RefCLIP-S (references optional) and the per-image values."""
    from PIL import Image

    from factory.models.clip import ClipModel

    ids = sorted(key for key in predictions if key in images)
    if not ids:
        return {"images": 0}
    clip = ClipModel(model)
    pictures = [Image.open(io.BytesIO(images[key])).convert("RGB") for key in ids]
    image_vectors = clip.embed_images(pictures)
    text_vectors = clip.embed_texts([prefix + predictions[key] for key in ids])
    per_image = clip_s(image_vectors, text_vectors)
    result: dict = {"images": len(ids), "CLIPScore": float(per_image.mean())}
    result["per_image"] = {
        key: {"CLIPScore": float(v)} for key, v in zip(ids, per_image, strict=True)
    }
    with_refs = [i for i, key in enumerate(ids) if references.get(key)]
    if with_refs:
        candidates = clip.embed_texts([predictions[ids[i]] for i in with_refs])
        best = np.array(
            [
                max(0.0, float((clip.embed_texts(list(references[ids[i]])) @ vector).max()))
                for i, vector in zip(with_refs, candidates, strict=True)
            ]
        )
        ref_scores = harmonic_mean(per_image[with_refs], best)
        result["RefCLIPScore"] = float(ref_scores.mean())
        for i, value in zip(with_refs, ref_scores, strict=True):
            result["per_image"][ids[i]]["RefCLIPScore"] = float(value)
    return result


def clip_s(image_vectors: np.ndarray, text_vectors: np.ndarray) -> np.ndarray:
    """Per pair of unit rows: 2.5 * max(cosine, 0)."""
    cosine = (image_vectors * text_vectors).sum(axis=1)
    return CLIP_WEIGHT * np.clip(cosine, 0.0, None)


def harmonic_mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    total = a + b
    return np.where(total > 0, 2 * a * b / np.where(total > 0, total, 1.0), 0.0)
