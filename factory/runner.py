"""A caption run, top to bottom: plan -> list -> execute -> account -> report.

`run_caption` reads as those five steps. The plan (factory/pipeline.py) is checked before
anything is listed; the listing skips what the output already holds; the execution
streams the rest through Ray Data; the accounting invariant is checked at the end:
    inputs = accepted + rejected + duplicates + skipped_existing
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any

from factory import __version__
from factory.dedup.service import start_for_steps, stop_dedup_index
from factory.io import outputs, uris
from factory.io.listing import ListingScan
from factory.io.listing_spill import SpilledListing, spill_listing
from factory.models.placement import (
    check_adapters_loadable,
    check_gpu_memory,
    model_steps,
    place_models,
    service_reservations,
    services,
    unpicked_adapters,
)
from factory.pipeline import Plan, plan_run
from factory.run_config import CaptionRunConfig
from factory.stage_kit.crash_guard import start_ledger

if TYPE_CHECKING:
    import ray.data

_VERSIONED = ("ray", "pyarrow", "numpy", "pillow", "pydantic", "torch", "transformers", "vllm")


class InvariantError(RuntimeError):
    """Rows went missing or were counted twice: the run must not look successful."""


@dataclass
class RunCounts:
    inputs: int = 0
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    skipped_existing: int = 0

    def balanced(self) -> bool:
        outcome = self.accepted + self.rejected + self.duplicates + self.skipped_existing
        return self.inputs == outcome


@dataclass
class RunResult:
    run_id: str
    output: str
    counts: RunCounts
    rejected_reasons: Counter = field(default_factory=Counter)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    input_blocks: int = 0  # the listing entered Ray Data as this many blocks
    wall_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    held: dict[str, int] = field(default_factory=dict)  # what the output holds after the run


def new_run_id() -> str:
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version(), "caption-factory": __version__}
    for name in _VERSIONED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def _notes(plan: Plan) -> list[str]:
    from factory.models.weights import builtin_note

    config = plan.config
    notes = [f"skipped {name}: {why}" for name, why in plan.skipped.items()]
    models = {name: getattr(config, name).model for name in ("clip", "detect")}
    models |= {where: step.engine.model for where, step in model_steps(config)}
    for stage, model in models.items():
        if model and (note := builtin_note(model)):
            notes.append(f"{stage} by {model}, a {note}")
    return notes + unpicked_adapters(config)


def check_output_folder(output: str) -> None:
    """An output that names an existing file is refused before anything is read."""
    if uris.size_of(output) is not None:
        raise ValueError(f"output {output!r} is a file; name a folder or an s3:// prefix")


def run_caption(config: CaptionRunConfig) -> RunResult:
    if not config.input or not config.output:
        raise ValueError("a caption run needs both an input and an output")
    check_output_folder(config.output)
    started = time.perf_counter()
    run_id = config.run_id or new_run_id()

    # plan: models placed, the plan checked, before anything is read
    config = place_models(config, run_id)  # steps naming a model get its placed engine
    check_gpu_memory(config)
    check_adapters_loadable(config)
    plan = plan_run(config, resume_from=config.output)

    # list: into parts beside the outputs (every read task reaches them), minus what the
    # output already holds
    scan = ListingScan(config.input, tuple(e.lower() for e in config.extensions))
    listing = spill_listing(
        scan, uris.join(config.output, "_listing", run_id), outputs.existing_uris(config.output)
    )
    result = RunResult(run_id=run_id, output=config.output, counts=RunCounts(), notes=_notes(plan))
    result.counts.inputs = listing.inputs
    result.counts.skipped_existing = listing.inputs - listing.rows

    # execute
    try:
        if listing.rows:
            _execute(plan, listing, run_id, result)
    finally:
        listing.remove()
    result.wall_seconds = time.perf_counter() - started

    # account: run.json describes the whole output; rows must add up
    _record(plan, listing.ignored_files, result)
    if not result.counts.balanced():
        raise InvariantError(f"inputs do not add up: {result.counts}")

    # report
    _write_report(config.output, result)
    return result


def _write_report(output: str, result: RunResult) -> None:
    """report.html beside the outputs; a report that fails is reported, the run stands."""
    try:
        from factory.eval.run_report import write_run_report

        write_run_report(output)
    except Exception as error:  # noqa: BLE001 - the captions are written; say why, go on
        note = f"report.html not written: {type(error).__name__}: {error}"
        print(f"WARNING: {note}", file=sys.stderr)
        result.notes.append(note)


def local_ray_settings(config: CaptionRunConfig) -> dict[str, Any]:
    """ray.init arguments for a Ray this process starts itself (RESULTS.md, issue #18).

    Ray keeps at most `num_workers_soft_limit` idle workers (default: the CPU count) and
    kills the rest after `idle_worker_killing_time_threshold_ms` (default 1 s). The light
    stages' half-CPU tasks beside the fused dedup+writer tasks keep about two workers per
    CPU busy, and each operator's tasks come in bursts, so with the defaults Ray kills
    and restarts workers (~1.4 CPU-s of imports each) all run long. Idle workers live
    10 s here: within a run none is killed, after it they go. The soft limit stays Ray's
    (no more workers alive than the plan runs at once: each holds 100-300 MiB).
    """
    if not _fixed_size_cluster(config):
        return {}  # a cluster's settings are the cluster's (cluster.yaml)
    system = {"idle_worker_killing_time_threshold_ms": config.ray.idle_worker_ms}
    if config.ray.workers_soft_limit:
        system["num_workers_soft_limit"] = config.ray.workers_soft_limit
    return {"_system_config": system}


def _execute(plan: Plan, listing: SpilledListing, run_id: str, result: RunResult) -> None:
    """Ray started (or joined), the plan checked against it, the run's helpers started
    (crash ledger, dedup index shards, model services), the dataset streamed and counted."""
    import ray

    config = plan.config
    if not ray.is_initialized():
        # "local" unless told otherwise: a plain ray.init() would join whatever cluster a
        # `ray start` on this machine left in /tmp/ray, which the config never asked for
        ray.init(
            address=config.ray.address or os.environ.get("RAY_ADDRESS") or "local",
            num_cpus=config.ray.num_cpus,
            include_dashboard=config.ray.include_dashboard,
            log_to_driver=True,
            **local_ray_settings(config),
        )
    model_services = services(config.models, config)
    if _fixed_size_cluster(config):
        plan.check_cluster(ray.cluster_resources(), service_reservations(config.models, config))
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = config.ray.preserve_order
    result.input_blocks = plan.input_blocks(listing.rows)
    ledger = start_ledger(run_id)  # the actor stages' crash ledger, for this run only
    dedup_index: list = []
    running = None
    try:
        # dedup's index shards (hashes only), seeded from the output before the stream
        dedup_index = start_for_steps(plan.steps, config.output, listing, config.ray.preserve_order)
        running = _start_services(model_services, run_id)
        _consume(plan.dataset(listing, run_id), result)
    finally:
        ray.kill(ledger)
        stop_dedup_index(dedup_index)
        _stop_services(running)


def _start_services(model_services: dict, run_id: str) -> Any:
    """Deploy the run's model services (Serve is imported only when a run has some)."""
    if not model_services:
        return None
    from factory.serve.model_service import start_model_services

    return start_model_services(model_services, run_id)


def _stop_services(running: Any) -> None:
    if running is not None:
        from factory.serve.model_service import stop_model_services

        stop_model_services(running)


def _consume(dataset: ray.data.Dataset, result: RunResult) -> None:
    for summary in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        for row in summary.to_pylist():
            result.counts.accepted += row["accepted"]
            result.counts.rejected += row["rejected"]
            result.counts.duplicates += row["duplicates"]
            result.rejected_reasons.update(json.loads(row["rejected_reasons"]))
            for stage, seconds in json.loads(row["stage_seconds"]).items():
                result.stage_seconds[stage] = result.stage_seconds.get(stage, 0.0) + seconds


def _fixed_size_cluster(config: CaptionRunConfig) -> bool:
    """A local Ray started by this process cannot grow; an autoscaling cluster can."""
    return config.ray.address is None and not os.environ.get("RAY_ADDRESS")


def _record(plan: Plan, ignored_files: int, result: RunResult) -> None:
    """run.json: the whole output (`counts`, `rejected_reasons`, `runs`: cumulative over
    every run into it) and this run apart (`this_run`; timings are this run's)."""
    config = plan.config
    this_run = {
        "run_id": result.run_id,
        "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "counts": vars(result.counts),
        "rejected_reasons": dict(result.rejected_reasons),
    }
    path = uris.join(config.output, "run.json")
    payload = {
        "run_id": result.run_id,
        "finished_at": this_run["finished_at"],
        "config": config.model_dump(mode="json"),
        "versions": package_versions(),
        **outputs.output_record(config.output, outputs.read_json(path), this_run),
        "this_run": this_run,
        "stage_seconds": {k: round(v, 4) for k, v in sorted(result.stage_seconds.items())},
        "wall_seconds": round(result.wall_seconds, 3),
        "input_blocks": result.input_blocks,
        "ignored_files": ignored_files,
        "skipped_stages": plan.skipped,
        "notes": result.notes,
        "command": sys.argv,
    }
    result.held = payload["counts"]
    outputs.write_json(path, payload)


def summary_text(result: RunResult) -> str:
    c = result.counts
    lines = [
        f"caption run {result.run_id} -> {result.output}",
        f"  inputs {c.inputs}: accepted {c.accepted}, rejected {c.rejected}, "
        f"duplicates {c.duplicates}, skipped (already written) {c.skipped_existing}",
    ]
    if result.held and c.skipped_existing:  # a resumed run: say what the output now holds
        held = ", ".join(f"{k} {result.held[k]}" for k in ("accepted", "rejected", "duplicates"))
        lines.append(f"  the output now holds: {held}")
    for reason, count in result.rejected_reasons.most_common():
        lines.append(f"  rejected {count:>5}  {reason}")
    if result.stage_seconds:
        timings = ", ".join(f"{k} {v:.2f}s" for k, v in result.stage_seconds.items())
        lines.append(f"  stage seconds (summed over workers): {timings}")
    lines.append(f"  wall time {result.wall_seconds:.1f}s")
    lines.extend(f"  NOTE: {note}" for note in result.notes)
    return "\n".join(lines)


__all__ = ["InvariantError", "RunCounts", "RunResult", "run_caption", "summary_text"]
