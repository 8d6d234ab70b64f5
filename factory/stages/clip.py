"""CLIP experts: museum category, visual-concept tags and an image embedding in one forward.

Each image is embedded once; the category and tags are zero-shot scores of that embedding
against the prompt embeddings of the taxonomy and the vocabulary, which each actor encodes
once when it starts. Scores are what the model family gives: a softmax over the labels of
one list for CLIP (a list's scores sum to 1, so with hundreds of tags each score is small),
an independent sigmoid per label for SigLIP.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from factory import vocab
from factory.io.images import decode_rgb
from factory.models.engine import ModelSource
from factory.prompts import one_placeholder
from factory.stage_kit.contract import (
    Columns,
    Resources,
    Row,
    StageConfig,
    fixed_columns,
    map_batch,
)

TAG_TYPE = pa.struct([pa.field("label", pa.string()), pa.field("score", pa.float32())])


class ClipConfig(StageConfig, ModelSource):
    model: str | None = Field(
        None,
        description="CLIP or SigLIP weights: a local directory, an s3://bucket/prefix "
        "(copied once per node into cache_dir) or builtin://tiny-clip (random-weight demo "
        "model); None: the stage is skipped and the run says so",
    )
    taxonomy: str = Field(
        vocab.MUSEUM_TAXONOMY,
        description="category labels: a shipped list name or a local file, one per line",
    )
    vocabulary: str = Field(
        vocab.ART_CONCEPTS,
        description="tag labels: a shipped list name or a local file, one per line",
    )
    prompt_template: str = Field(
        "a photo of a {}.", description="text each label is scored as; {} is the label"
    )
    tag_threshold: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="keep tags scoring at least this (CLIP's scores share 1 across the whole "
        "vocabulary, so keep it low; SigLIP's are per tag)",
    )
    tag_top_k: int = Field(10, ge=0, description="keep at most this many tags, best first")
    embed: bool = Field(
        True, description="store the image embedding (unit length; near-duplicate dedup uses it)"
    )
    resources: Resources = Field(
        default_factory=lambda: Resources(
            compute="actors", concurrency=1, num_cpus=1, batch_size=16
        )
    )

    @field_validator("prompt_template")
    @classmethod
    def _one_placeholder(cls, template: str) -> str:
        return one_placeholder(template, "prompt_template")


class ClipStage:
    COLUMNS = Columns(
        stage="clip",
        needs=("image",),
        adds={
            "category": pa.string(),
            "category_score": pa.float32(),
            "tags": pa.list_(TAG_TYPE),
            "embedding": pa.list_(pa.float32()),
        },
    )
    columns_for = fixed_columns(COLUMNS)

    def __init__(self, config: ClipConfig):
        if config.model is None:
            raise ValueError("ClipStage needs config.model; a run without one skips the stage")
        from factory.models.clip import ClipModel

        self.config = config
        self.model = ClipModel(config.model, config)
        self.categories = vocab.load_vocabulary(config.taxonomy)
        self.tag_labels = vocab.load_vocabulary(config.vocabulary)
        self.category_texts = self.model.embed_texts(self._prompts(self.categories))
        self.tag_texts = self.model.embed_texts(self._prompts(self.tag_labels))

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_batch(batch, self.COLUMNS, self._annotate)

    def _prompts(self, labels: Sequence[str]) -> list[str]:
        return [self.config.prompt_template.format(label) for label in labels]

    def _annotate(self, rows: list[Row]) -> list[Row]:
        images = self.model.embed_images([decode_rgb(row["image"]) for row in rows])
        category_scores = self.model.scores(images, self.category_texts)
        tag_scores = self.model.scores(images, self.tag_texts)
        return [
            self._row(image, categories, tags)
            for image, categories, tags in zip(images, category_scores, tag_scores, strict=True)
        ]

    def _row(self, embedding: np.ndarray, categories: np.ndarray, tags: np.ndarray) -> Row:
        best = int(np.argmax(categories))
        return {
            "category": self.categories[best],
            "category_score": float(categories[best]),
            "tags": select_tags(
                self.tag_labels, tags, self.config.tag_threshold, self.config.tag_top_k
            ),
            "embedding": embedding.tolist() if self.config.embed else None,
        }


def select_tags(
    labels: Sequence[str], scores: np.ndarray, threshold: float, top_k: int
) -> list[dict[str, object]]:
    """Labels scoring at least `threshold`, best first, at most `top_k` (ties: list order)."""
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [
        {"label": labels[i], "score": float(scores[i])} for i in order if scores[i] >= threshold
    ]
