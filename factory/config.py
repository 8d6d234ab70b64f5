"""Typed configs for a caption run: YAML files, `key=value` overrides, documented fields.

Each stage owns its config class (in its own file); this module composes them into the
run config and loads it. Field descriptions double as documentation (`factory config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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


def apply_override(
    tree: dict[str, Any], assignment: str, model: type[BaseModel] | None = None
) -> None:
    """Apply one `a.b.c=value`; the value is parsed as YAML (numbers, null, lists...).

    A section that is off (null) is first given its defaults, so one field of it can be set.
    """
    key, separator, raw = assignment.partition("=")
    if not separator or not key.strip():
        raise ValueError(f"override {assignment!r} is not key=value")
    *parents, leaf = key.strip().split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = section_defaults(model, part)
        if not isinstance(child, dict):
            raise ValueError(f"override {assignment!r}: {part!r} is not a section")
        node, model = child, section_model(model, part)
    node[leaf] = yaml.safe_load(raw)


def merge(
    base: dict[str, Any], update: dict[str, Any], model: type[BaseModel] | None = None
) -> dict[str, Any]:
    """Deep-merge `update` onto `base`: a section names only the fields it changes, and a
    section that is off by default starts from its defaults."""
    merged = dict(base)
    for key, value in update.items():
        current = merged.get(key)
        if isinstance(value, dict) and current is None:
            current = section_defaults(model, key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged[key] = merge(current, value, section_model(model, key))
        else:
            merged[key] = value
    return merged


def section_model(model: type[BaseModel] | None, key: str) -> type[BaseModel] | None:
    """The config class of field `key` of `model` (`X | None` unwrapped), if it is one."""
    field = model.model_fields.get(key) if model is not None else None
    if field is None:
        return None
    candidates = [field.annotation, *get_args(field.annotation)]
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if len(models) == 1 else None


def section_defaults(model: type[BaseModel] | None, key: str) -> dict[str, Any]:
    """Field `key`'s section with every default filled in; {} when it has no defaults."""
    section = section_model(model, key)
    if section is None:
        return {}
    try:
        return section().model_dump(mode="json")
    except ValidationError:  # required fields: only the update gives them
        return {}


def load_config(
    path: str | Path | None = None,
    overrides: list[str] = (),
    model: type[BaseModel] = CaptionRunConfig,
) -> Any:
    """Defaults, then the YAML file, then each `key=value`; each layer only changes fields."""
    try:
        tree = model().model_dump(mode="json")
    except ValidationError:  # required fields (a training run's data): they come from the file
        tree = {}
    if path is not None:
        loaded = read_yaml(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"config {path} must be a mapping, not {type(loaded).__name__}")
        # top-level x-* keys hold YAML anchors that the sections reference (x-vlm: &vlm ...)
        loaded = {k: v for k, v in (loaded or {}).items() if not str(k).startswith("x-")}
        tree = merge(tree, loaded, model)
    for assignment in overrides:
        apply_override(tree, assignment, model)
    try:
        return model.model_validate(tree)
    except ValidationError as error:
        error.add_note(explain(error, model))  # the CLI's one line
        raise


def explain(error: ValidationError, model: type[BaseModel]) -> str:
    """The errors on one line; an unknown key comes with the keys valid in its place."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        if item["type"] != "extra_forbidden":
            parts.append(f"{where}: {item['msg']}")
            continue
        section: type[BaseModel] | None = model
        for part in item["loc"][:-1]:
            section = section_model(section, str(part))
        known = f" (known here: {', '.join(section.model_fields)})" if section else ""
        parts.append(f"unknown key {where!r}{known}")
    return "; ".join(parts)


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content; bad YAML is a ValueError naming the file, line and problem."""
    try:
        return yaml.safe_load(Path(path).read_text("utf-8"))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        raise ValueError(f"{where}: not valid YAML: {error.problem or error.context}") from None
