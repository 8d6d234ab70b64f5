"""plan_run(config) -> the run's checked Plan; Plan.dataset chains it in Ray Data.

The plan is all this module does: the runner (factory/runner.py) lists, executes,
accounts and reports.

    read -> validate -> fingerprint -> clip -> dedup -> ocr -> detect -> knowledge
         -> caption -> qa -> expand -> decompose -> critic -> rewrite -> health -> write

clip runs before dedup so its embeddings can serve the optional embedding dedup mode.
A stage whose weights are not configured is left out and reported as skipped; nothing
stands in for it.

Every row reaches the writer: stages mark what they cannot handle and pass it on.
The dataset yields one small summary row per written batch.
"""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from factory import __version__, records
from factory.io.listing_spill import SpilledListing
from factory.io.outputs import ShardWriter
from factory.models.placement import model_steps
from factory.run_config import CaptionRunConfig
from factory.stage_kit.contract import Columns, MissingColumnsError, Resources
from factory.stage_kit.crash_guard import CrashGuardedStage
from factory.stages.caption import CaptionStage
from factory.stages.clip import ClipStage
from factory.stages.critic import CriticStage
from factory.stages.decompose import DecomposeStage
from factory.stages.dedup import DedupStage
from factory.stages.detect import DetectStage
from factory.stages.expand import ExpandStage
from factory.stages.fingerprint import FingerprintStage
from factory.stages.health import HealthStage, text_columns
from factory.stages.knowledge import KnowledgeStage
from factory.stages.ocr import OcrStage
from factory.stages.qa import QAStage
from factory.stages.read import ReadStage
from factory.stages.rewrite import RewriteStage
from factory.stages.validate import ValidateStage

if TYPE_CHECKING:
    import ray.data


WRITER_CPUS = 0.25


class ResourceError(ValueError):
    """The stages' reservations cannot all fit: Ray Data would wait forever."""


@dataclass(frozen=True)
class StageStep:
    """A stage class with its constructor arguments and resources, ready for map_batches."""

    fn: type
    kwargs: dict[str, Any]
    resources: Resources
    columns: Columns


class _CallOnce:
    """Runs a stateless stage as Ray tasks: built once per worker process, then reused."""

    def __init__(self, fn: type, kwargs: dict[str, Any]):
        self.fn, self.kwargs, self._stage = fn, kwargs, None

    def __call__(self, batch: pa.Table) -> pa.Table:
        if self._stage is None:
            self._stage = self.fn(**self.kwargs)
        return self._stage(batch)

    def __getstate__(self) -> dict[str, Any]:
        return {"fn": self.fn, "kwargs": self.kwargs, "_stage": None}


def compute_strategy(res: Resources) -> Any:
    import ray.data

    if res.compute == "tasks":
        return ray.data.TaskPoolStrategy(size=res.concurrency)
    if isinstance(res.concurrency, tuple):
        low, high = res.concurrency
        return ray.data.ActorPoolStrategy(min_size=low, max_size=high)
    return ray.data.ActorPoolStrategy(size=res.concurrency or 1)


@dataclass(frozen=True)
class CrashGuard:
    """Guard actor stages with the run's crash ledger (factory.stage_kit.crash_guard)."""

    run_id: str
    max_record_crashes: int


def apply(
    dataset: ray.data.Dataset, step: StageStep, guard: CrashGuard | None = None
) -> ray.data.Dataset:
    res = step.resources
    common: dict[str, Any] = {
        "batch_format": "pyarrow",
        "batch_size": res.batch_size,
        "num_cpus": res.num_cpus,
        "zero_copy_batch": True,
        "compute": compute_strategy(res),
    }
    if res.num_gpus:
        common["num_gpus"] = res.num_gpus
    if res.custom_resources:
        common["resources"] = dict(res.custom_resources)
    if res.compute == "actors" and guard is not None:
        guarded = {
            "stage": step.fn,
            "stage_kwargs": step.kwargs,
            "name": step.columns.stage,
            "run_id": guard.run_id,
            "max_crashes": guard.max_record_crashes,
        }
        return dataset.map_batches(CrashGuardedStage, fn_constructor_kwargs=guarded, **common)
    if res.compute == "actors":
        return dataset.map_batches(step.fn, fn_constructor_kwargs=step.kwargs, **common)
    return dataset.map_batches(_CallOnce(step.fn, step.kwargs), **common)


def _step(fn: type, config: Any, resources: Resources | None = None, **kwargs: Any) -> StageStep:
    columns = fn.columns_for(config, **kwargs)
    return StageStep(fn, {"config": config, **kwargs}, resources or config.resources, columns)


# the caption loop after the first-pass captions, in order
LOOP_STAGES = (
    ("qa", QAStage),
    ("expand", ExpandStage),
    ("decompose", DecomposeStage),
    ("critic", CriticStage),
    ("rewrite", RewriteStage),
)


def plan_run(config: CaptionRunConfig, resume_from: str | None) -> Plan:
    """The run's plan; a plan that cannot work is refused here, before any work."""
    return Plan(config, stage_steps(config, resume_from), skipped_stages(config))


def stage_steps(config: CaptionRunConfig, resume_from: str | None) -> list[StageStep]:
    """The run's stages in order; a plan that cannot work is refused here, before any work."""
    validation = config.validation
    steps = [
        _step(ReadStage, config.read, max_bytes=validation.max_bytes),
        _step(ValidateStage, validation),
        _step(FingerprintStage, config.dedup, validation.resources),
    ]
    if config.clip.model is not None:
        steps.append(_step(ClipStage, config.clip))
    # the step names its sharded index; the runner starts it (factory.dedup.service)
    index = f"factory-dedup-{uuid.uuid4().hex[:12]}"
    steps.append(_step(DedupStage, config.dedup, resume_from=resume_from, index=index))
    if config.ocr is not None:
        steps.append(_step(OcrStage, config.ocr))
    if config.detect.model is not None:
        if config.clip.model is None and not config.detect.extra_queries:
            raise ValueError(
                "detect has nothing to look for: configure clip.model (its tags become the "
                "queries) or detect.extra_queries"
            )
        steps.append(_step(DetectStage, config.detect))
    if config.knowledge is not None:
        steps.append(_step(KnowledgeStage, config.knowledge))
    if config.caption is not None:
        steps.append(_step(CaptionStage, config.caption))
    for name, stage in LOOP_STAGES:
        if (stage_config := getattr(config, name)) is not None:
            steps.append(_step(stage, stage_config))
    texts = text_columns({k: v for step in steps for k, v in step.columns.adds.items()})
    if config.health is not None and texts:
        steps.append(_step(HealthStage, config.health, text_columns=texts))
    check_wiring(steps)
    return steps


def skipped_stages(config: CaptionRunConfig) -> dict[str, str]:
    """Stages left out of this run, with why: reported in run.json and the summary."""
    skipped = {}
    for name in ("clip", "detect"):
        if getattr(config, name).model is None:
            skipped[name] = f"no weights configured ({name}.model is null)"
    for name in ("ocr", "knowledge", "caption", "health", *(name for name, _ in LOOP_STAGES)):
        if getattr(config, name) is None:
            skipped[name] = f"switched off ({name}: null)"
    return skipped


def engine_models(config: CaptionRunConfig) -> dict[str, str]:
    """Which model each generating step of this run uses (for notes and lineage checks)."""
    return {where: step.engine.model for where, step in model_steps(config)}


def _min_pool(res: Resources) -> int:
    if isinstance(res.concurrency, tuple):
        return res.concurrency[0]
    return res.concurrency or 1


def check_fits(
    steps: list[StageStep],
    cpus: float,
    gpus: float,
    services: list[tuple[str, int, float, float]] = (),
) -> None:
    """Refuse, with the numbers, a plan whose actors leave no room for its tasks.

    Actor pools and model services (who, replicas, CPUs, GPUs each) hold their
    reservations for the whole run; tasks need room beside them.
    """
    held = [
        (f"{s.columns.stage}", _min_pool(s.resources), s.resources.num_cpus, s.resources.num_gpus)
        for s in steps
        if s.resources.compute == "actors"
    ] + list(services)
    tasks = [s.resources for s in steps if s.resources.compute == "tasks"]
    held_cpus = sum(copies * each for _, copies, each, _ in held)
    held_gpus = sum(copies * each for _, copies, _, each in held)
    task_cpus = max([WRITER_CPUS, *(r.num_cpus for r in tasks)])
    task_gpus = max([0.0, *(r.num_gpus for r in tasks)])
    listed = ", ".join(
        f"{who} {copies}x{cpu:g} CPU{f' {gpu:g} GPU' if gpu else ''}"
        for who, copies, cpu, gpu in held
    )
    # GPUs first: no CPU setting can make up for missing GPUs
    if held_gpus + task_gpus > gpus:
        raise ResourceError(
            f"the plan needs at least {held_gpus + task_gpus:g} "
            f"GPU{'' if held_gpus + task_gpus == 1 else 's'} ({listed}) but the "
            f"cluster has {gpus:g}: place models as services shared by the stages, set "
            "<stage>.resources.num_gpus=0 and engine.device=cpu, or run on a cluster with "
            "more GPUs"
        )
    if held_cpus + task_cpus > cpus:
        raise ResourceError(
            f"the stages need {held_cpus + task_cpus:g} CPUs at once (actors: {listed}; plus "
            f"{task_cpus:g} for a task) but the cluster has {cpus:g}: lower "
            "<stage>.resources.num_cpus or concurrency"
        )


def check_custom_resources(steps: list[StageStep], cluster: dict[str, float]) -> None:
    """Refuse a stage whose custom resources (vlm_slot, ...) the fixed cluster cannot give."""
    for step in steps:
        res = step.resources
        copies = _min_pool(res) if res.compute == "actors" else 1
        for name, amount in res.custom_resources.items():
            if copies * amount > cluster.get(name, 0.0):
                raise ResourceError(
                    f"stage {step.columns.stage!r} asks for {copies * amount:g} {name!r} but "
                    f"this cluster has {cluster.get(name, 0.0):g}: that resource comes from a "
                    f"cluster.yaml node type; drop {step.columns.stage}.resources."
                    f"custom_resources to run here"
                )


def check_wiring(steps: list[StageStep]) -> None:
    """Every stage's needed columns come from the listing or an earlier stage."""
    available = set(records.LISTING_SCHEMA.names)
    for step in steps:
        columns = step.columns
        missing = [name for name in columns.needs if name not in available]
        if missing:
            raise MissingColumnsError(
                f"stage {columns.stage!r} needs {missing}, which no earlier stage produces "
                f"(stages: {[s.columns.stage for s in steps]})"
            )
        available = (available | set(columns.adds)) - set(columns.drops)


def captions_schema(steps: list[StageStep]) -> pa.Schema:
    fields = [f for step in steps for f in step.columns.fields() if f.name != "data"]
    return records.captions_schema(fields)


def input_block_rows(inputs: int, config: CaptionRunConfig) -> int:
    """Rows per input block: `rows_per_block`, grown so there are at most `max_input_blocks`.

    The driver keeps tens of KB per block for the whole run (Ray Data's and Ray's own
    bookkeeping, benchmarks/RESULTS.md §9), so the cap bounds that part of its memory.
    """
    return max(config.ray.rows_per_block, math.ceil(inputs / config.ray.max_input_blocks))


@dataclass(frozen=True)
class Plan:
    """A caption run's checked plan: its stages in order, and those left out with why."""

    config: CaptionRunConfig
    steps: list[StageStep]
    skipped: dict[str, str]

    def check_cluster(
        self, cluster: dict[str, float], services: list[tuple[str, int, float, float]]
    ) -> None:
        """Refuse a plan the (fixed-size) cluster cannot run beside the model services."""
        check_fits(self.steps, cluster.get("CPU", 0.0), cluster.get("GPU", 0.0), services)
        check_custom_resources(self.steps, cluster)

    def input_blocks(self, rows: int) -> int:
        """How many blocks the listing's `rows` enter Ray Data as."""
        return math.ceil(rows / input_block_rows(rows, self.config))

    def dataset(self, listing: SpilledListing, run_id: str) -> ray.data.Dataset:
        """The steps chained over the listing's rows to do, ending in the shard writer.

        Actor stages run behind the run's crash ledger, which the caller starts first
        (`start_ledger(run_id)`) and keeps alive until the dataset is consumed.
        """
        import ray.data

        from factory.io.listing_source import ListingDatasource

        config, steps = self.config, self.steps
        source = ListingDatasource(listing, input_block_rows(listing.rows, config))
        dataset = ray.data.read_datasource(
            source,
            override_num_blocks=self.input_blocks(listing.rows),
            # the first stage's reservation, which check_fits has made room for beside actors
            num_cpus=steps[0].resources.num_cpus,
        )
        guard = CrashGuard(run_id, config.ray.max_record_crashes)
        for step in steps:
            dataset = apply(dataset, step, guard)
        writer = ShardWriter(
            output=config.output,
            captions_schema=captions_schema(steps),
            run_id=run_id,
            factory_version=__version__,
            compression=config.output_options.compression,
        )
        return dataset.map_batches(
            writer,
            batch_format="pyarrow",
            batch_size=config.output_options.rows_per_shard,
            num_cpus=WRITER_CPUS,
            zero_copy_batch=True,
        )
