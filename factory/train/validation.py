"""Validation caption metrics: generate for held-out (image, prompt) pairs, score against
every target the pair has (several captions per image are several references).

Every rank generates its even share, so ZeRO-3's sharded forward passes line up; the
predictions are gathered and every rank scores the same corpus.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from factory.eval.captioning import CAPTION_METRICS


class ValidationMetricsConfig(BaseModel):
    """Generation-based metrics beside the validation loss (empty `metrics`: loss only)."""

    model_config = ConfigDict(extra="forbid")

    metrics: list[str] = Field(
        default_factory=list,
        description="caption metrics from `factory eval`, e.g. [BLEU-4, ROUGE-L, CIDEr-D]; "
        "logged as val_<name> each epoch (METEOR needs Java on the workers)",
    )
    max_examples: int = Field(
        32, ge=1, description="validation (image, prompt) pairs generated per epoch"
    )
    max_new_tokens: int = Field(48, ge=1, description="tokens generated per pair, greedily")

    @field_validator("metrics")
    @classmethod
    def _known(cls, metrics: list[str]) -> list[str]:
        unknown = sorted(set(metrics) - set(CAPTION_METRICS))
        if unknown:
            raise ValueError(f"unknown metrics {unknown}; known: {list(CAPTION_METRICS)}")
        return metrics


def references(examples: Sequence[Any]) -> dict[tuple[str, str], list[str]]:
    """(image, prompt) -> its targets (the chosen texts of preference pairs), in data order."""
    grouped: dict[tuple[str, str], list[str]] = defaultdict(list)
    for example in examples:
        target = getattr(example, "target", None) or getattr(example, "chosen", None)
        grouped[(example.image_uri, example.prompt)].append(target)
    return dict(grouped)


def validation_metrics(
    generate, config: ValidationMetricsConfig, examples: Sequence[Any], rank: int, world: int
) -> dict[str, float]:
    """{"val_<metric>": score}; `generate(image_uri, prompt) -> text` runs the model."""
    from factory.eval.captioning import score_captions
    from factory.train.distributed import even_shard, gather_objects

    if not config.metrics or not examples:
        return {}
    gold = references(examples)
    pairs = sorted(gold)[: config.max_examples]
    mine = {_key(pair): generate(*pair) for pair in even_shard(pairs, rank, world)}
    predictions = {key: text for share in gather_objects(mine) for key, text in share.items()}
    scores = score_captions(
        predictions, {_key(pair): gold[pair] for pair in pairs}, metrics=config.metrics
    )
    return {f"val_{name}": value for name, value in scores.items()}


def _key(pair: tuple[str, str]) -> str:
    return "\t".join(pair)
