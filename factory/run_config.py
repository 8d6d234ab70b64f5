"""Typed configs for a caption run: YAML files, `key=value` overrides, documented fields.

Each stage owns its config class (in its own file); this module composes them into the
run config (loaded by factory.config_loading). Field descriptions double as documentation
(`factory config`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from factory.config_loading import load_config
from factory.io.listing import DEFAULT_EXTENSIONS
from factory.models.placement import ModelSpec, check_references
from factory.stages.caption import CaptionConfig
from factory.stages.clip import ClipConfig
from factory.stages.critic import CriticConfig
from factory.stages.decompose import DecomposeConfig
from factory.stages.dedup import DedupConfig
from factory.stages.detect import DetectConfig
from factory.stages.expand import ExpandConfig
from factory.stages.health import HealthConfig
from factory.stages.knowledge import KnowledgeConfig
from factory.stages.ocr import OcrConfig
from factory.stages.qa import QAConfig
from factory.stages.read import ReadConfig
from factory.stages.rewrite import RewriteConfig
from factory.stages.validate import ValidateConfig


class RayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(
        None,
        description="cluster to join ('auto', 'ray://host:10001'); None starts a local Ray, "
        "or joins the cluster a `ray job submit` runs in",
    )
    num_cpus: int | None = Field(None, description="CPUs of a local Ray (None: all)")
    include_dashboard: bool = Field(False, description="start the dashboard with a local Ray")
    preserve_order: bool = Field(
        True, description="process in listing order, so 'first occurrence' in dedup is stable"
    )
    rows_per_block: int = Field(32, ge=1, description="inputs per block: the unit of parallelism")
    max_input_blocks: int = Field(
        512,
        ge=1,
        description="the listing enters Ray Data in at most this many blocks; past "
        "rows_per_block x max_input_blocks inputs the blocks grow instead: the driver keeps "
        "tens of KB of bookkeeping per block for the whole run",
    )
    idle_worker_ms: int = Field(
        10_000,
        ge=0,
        description="a local Ray started by the run keeps idle workers this long before "
        "killing them (Ray's default is 1,000: bursty stages then restart workers, ~1.4 "
        "CPU-s of imports each, all run long)",
    )
    workers_soft_limit: int | None = Field(
        None,
        ge=1,
        description="most idle workers a local Ray keeps (None: Ray's default, the CPU "
        "count; more keeps 100-300 MiB each alive)",
    )
    max_record_crashes: int = Field(
        2,
        ge=1,
        description="an actor stage's record whose worker process died this many times (the "
        "last time running alone) is rejected as worker_crashed instead of retried again",
    )


class OutputConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows_per_shard: int = Field(256, ge=1, description="rows per Parquet shard (at most)")
    compression: str = Field("zstd", description="Parquet compression codec")


class CaptionRunConfig(BaseModel):
    """Everything a caption run needs; `factory caption` fills input/output from flags."""

    model_config = ConfigDict(extra="forbid")

    input: str | None = Field(
        None, description="folder, s3://bucket/prefix, or manifest (.parquet/.jsonl/.csv)"
    )
    output: str | None = Field(None, description="folder or s3://bucket/prefix for results")
    run_id: str | None = Field(None, description="names this run in lineage (default: time)")
    extensions: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXTENSIONS),
        description="file extensions listed as inputs in folders/prefixes ([] = all files)",
    )
    models: dict[str, ModelSpec] = Field(
        default_factory=dict,
        description="each model of the run named once (engine, weights, adapters, placement "
        "in_stage or service, resources); steps refer to one with `model: NAME` and "
        "optionally `adapter: ADAPTER`",
    )
    read: ReadConfig = Field(default_factory=ReadConfig)
    validation: ValidateConfig = Field(default_factory=ValidateConfig)
    clip: ClipConfig = Field(
        default_factory=ClipConfig,
        description="CLIP category, tags and embedding; skipped while clip.model is null",
    )
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    ocr: OcrConfig | None = Field(default_factory=OcrConfig, description="null skips OCR")
    detect: DetectConfig = Field(
        default_factory=DetectConfig,
        description="open-vocabulary boxes for the kept tags; skipped while detect.model is null",
    )
    knowledge: KnowledgeConfig | None = Field(
        default_factory=KnowledgeConfig, description="catalogue record as world knowledge"
    )
    caption: CaptionConfig | None = Field(
        default_factory=CaptionConfig, description="null skips captioning"
    )
    qa: QAConfig | None = Field(None, description="museum question-answer pairs; null skips")
    expand: ExpandConfig | None = Field(
        None, description="8-dimension expansion of one caption style; null skips"
    )
    decompose: DecomposeConfig | None = Field(
        None, description="atomic facts of the caption under review; null skips"
    )
    critic: CriticConfig | None = Field(
        None, description="judge each fact against the image (needs decompose); null skips"
    )
    rewrite: RewriteConfig | None = Field(
        None, description="fix the caption from the verdicts (needs critic); null skips"
    )
    health: HealthConfig | None = Field(
        default_factory=HealthConfig, description="health checks on every caption"
    )
    output_options: OutputConfig = Field(default_factory=OutputConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    @model_validator(mode="after")
    def _one_style_under_review(self) -> CaptionRunConfig:
        if self.expand and self.decompose and self.expand.style != self.decompose.style:
            raise ValueError(
                f"expand.style ({self.expand.style!r}) and decompose.style "
                f"({self.decompose.style!r}) must name the same caption style: the expanded "
                "caption is the one decomposed"
            )
        check_references(self.models, self)
        return self


def load_run_config(
    path: str | Path | None = None, overrides: Sequence[str] = ()
) -> CaptionRunConfig:
    """A caption run's config: defaults, then the YAML file, then each `key=value`."""
    return load_config(path, overrides, model=CaptionRunConfig)
