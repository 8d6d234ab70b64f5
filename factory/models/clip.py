"""CLIP and SigLIP image/text embeddings and zero-shot scores through transformers.

One class serves both families; the checkpoint's config decides how similarities become
scores. CLIP was trained with a softmax over the texts of a batch, so its zero-shot score is
a softmax over the candidate labels (they compete, scores sum to 1). SigLIP was trained
with an independent sigmoid per image-text pair, so each label gets its own probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import AutoModel

from factory.models.engine import ModelSource
from factory.models.loading import load_pretrained

# model_type values whose scores are per-pair sigmoids with a learned bias
SIGMOID_MODEL_TYPES = frozenset({"siglip", "siglip2"})
TEXT_BATCH_SIZE = 64  # texts per forward when filling the cache (bounds peak memory)


class ClipModel:
    """Loads a CLIP-family checkpoint once; embeds images and texts; scores labels."""

    def __init__(self, model: str, source: ModelSource | None = None):
        loaded = load_pretrained(AutoModel, model, source or ModelSource())
        self.device, self.processor, self.model = loaded.device, loaded.processor, loaded.model
        self.sigmoid = self.model.config.model_type in SIGMOID_MODEL_TYPES
        self.logit_scale = float(self.model.logit_scale.detach().float().exp())
        bias = getattr(self.model, "logit_bias", None)
        self.logit_bias = float(bias.detach().float()) if bias is not None else 0.0
        self._text_cache: dict[str, np.ndarray] = {}

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """(n, dim) float32 rows of unit length, one per image."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        inputs = self.processor(images=list(images), return_tensors="pt")
        with torch.inference_mode():
            # BatchFeature.to casts only floating tensors to the model's dtype.
            inputs = inputs.to(device=self.device, dtype=self.model.dtype)
            features = self.model.get_image_features(**inputs)
        return _unit_rows(_pooled(features))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """(n, dim) float32 rows of unit length, one per text.

        Cached by text: an actor's taxonomy and vocabulary prompts never change, so each is
        encoded once per actor however many batches ask for it.
        """
        missing = list(dict.fromkeys(text for text in texts if text not in self._text_cache))
        for start in range(0, len(missing), TEXT_BATCH_SIZE):
            chunk = missing[start : start + TEXT_BATCH_SIZE]
            self._text_cache.update(zip(chunk, self._encode_texts(chunk), strict=True))
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self._text_cache[text] for text in texts])

    def scores(self, image_embeddings: np.ndarray, text_embeddings: np.ndarray) -> np.ndarray:
        """(images, labels) zero-shot scores: softmax over labels (CLIP) or sigmoid (SigLIP)."""
        # float64: a SigLIP logit of -100 overflows exp() in float32
        cosine = image_embeddings.astype(np.float64) @ text_embeddings.astype(np.float64).T
        logits = self.logit_scale * cosine + self.logit_bias
        if self.sigmoid:
            return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)

    def zero_shot(self, images: Sequence[Image.Image], labels: Sequence[str]) -> np.ndarray:
        """(images, labels) scores of each label's text (use a prompt template upstream)."""
        return self.scores(self.embed_images(images), self.embed_texts(labels))

    @property
    def dim(self) -> int:
        """Length of the embeddings (CLIP: projection_dim; SigLIP: the text projection)."""
        config = self.model.config
        text = config.text_config
        dim = getattr(config, "projection_dim", None) or getattr(text, "projection_size", None)
        return int(dim or text.hidden_size)

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        tokenizer = self.processor.tokenizer
        inputs = tokenizer(
            texts,
            # SigLIP pools the last position and was trained on texts padded to full length.
            padding="max_length" if self.sigmoid else True,
            truncation=True,
            max_length=self._max_text_tokens(),
            return_tensors="pt",
        )
        with torch.inference_mode():
            features = self.model.get_text_features(**inputs.to(self.device))
        return _unit_rows(_pooled(features))

    def _max_text_tokens(self) -> int:
        # Some tokenizers report a huge model_max_length; the position table is the real cap.
        positions = self.model.config.text_config.max_position_embeddings
        return min(int(self.processor.tokenizer.model_max_length), int(positions))


def _pooled(features: Any) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output holds the projected features;
    # older versions and some remote-code models return the tensor itself.
    return features if isinstance(features, torch.Tensor) else features.pooler_output


def _unit_rows(features: torch.Tensor) -> np.ndarray:
    vectors = features.detach().float().cpu().numpy()
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
