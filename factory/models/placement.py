"""Models named once per run, and where each one runs.

A run config's `models:` section names each model once (engine, weights, adapters,
placement, resources); every generating step refers to it by name (`model: vlm`,
optionally `adapter: my-lora`). Two placements:

- `in_stage`: the engine is loaded inside each actor of every stage that uses the model
  (one copy per actor; steps of one actor share it). Right for a one-model job.
- `service`: a pool of engine replicas, a Ray Serve deployment of the same `ModelServer`
  that `factory serve` runs, which every step using the model calls with many requests in
  flight; loaded once per replica however many steps use it. This is the shape of Ray
  Data LLM's ServeDeploymentProcessorConfig: the batch stages stay CPU-only clients.

Light on purpose (pydantic only): the run config is validated on the driver.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from factory.models.engine import EngineConfig, ServiceEndpoint
from factory.serve.serve_config import ModelDeploymentOptions

SERVICE_KIND = "service"


class ServiceOptions(ModelDeploymentOptions):
    """A model service's replicas: `factory serve`'s model deployment options, with defaults
    for batch clients (many requests in flight from every stage actor, no per-call log)."""

    max_ongoing_requests: int = Field(
        64,
        ge=1,
        description="calls one replica works on at once; a stage's batch is one call, so "
        "this times the batch size is the requests an engine may hold (autoscaling's "
        "target_ongoing_requests counts calls too)",
    )
    max_queued_requests: int = Field(
        -1, ge=-1, description="requests waiting for a replica beyond that; -1: unbounded"
    )
    access_log: bool = Field(False, description="log a line per request")


class ModelSpec(BaseModel):
    """One model of a run: what it is, where it runs, how many replicas and resources."""

    model_config = ConfigDict(extra="forbid")

    engine: EngineConfig = Field(
        ...,
        description="engine, weights and adapters (engine.adapters: name -> PEFT adapter "
        "directory or s3:// prefix, picked per step with `adapter:`)",
    )
    placement: Literal["in_stage", "service"] = Field(
        "in_stage",
        description="in_stage: loaded in the actors of each stage that uses it; service: a "
        "Ray Serve deployment of replicas that every step using it calls",
    )
    service: ServiceOptions = Field(
        default_factory=ServiceOptions,
        description="placement service: replicas (num_replicas, or autoscaling on ongoing "
        "requests), resources per replica, batching, adapters kept per replica",
    )
    request_timeout_s: float = Field(
        600.0, gt=0, description="placement service: longest one request may take"
    )
    max_retries: int = Field(
        3,
        ge=0,
        description="placement service: a request whose replica died is sent again this many "
        "times (Serve replaces the replica), so no record is lost to a lost replica",
    )

    @model_validator(mode="after")
    def _service_engine_is_real(self) -> ModelSpec:
        if self.engine.kind == SERVICE_KIND:
            raise ValueError("a model's engine.kind cannot be 'service': name a real engine")
        return self


def model_steps(config: Any) -> Iterator[tuple[str, Any]]:
    """(where, step config) for every generating step of a caption run config.

    A step config has `model`, `adapter` and `engine` (ChatStep, or CaptionConfig).
    """
    if config.caption is not None:
        yield "caption", config.caption
    if config.expand is not None:
        yield "expand.questions", config.expand.questions
        yield "expand.answer", config.expand.answer
    for name in ("qa", "decompose", "critic", "rewrite"):
        if (stage := getattr(config, name)) is not None:
            yield name, stage.step


def check_references(models: dict[str, ModelSpec], config: Any) -> None:
    """Every `model:` a step names exists, and so does every adapter it picks."""
    for where, step in model_steps(config):
        if step.model is None:
            adapters = step.engine.adapters
        elif step.model not in models:
            raise ValueError(
                f"{where}.model {step.model!r} is not in `models:` (named: {sorted(models)})"
            )
        else:
            adapters = models[step.model].engine.adapters
        if step.adapter is not None and step.adapter not in adapters:
            raise ValueError(
                f"{where}.adapter {step.adapter!r} is not an adapter of "
                f"{step.model or 'its engine'} (adapters: {sorted(adapters)})"
            )


def service_app_name(run_id: str, model: str) -> str:
    return f"factory-{model}-{run_id}"


def placed_engine(spec: ModelSpec, name: str, run_id: str) -> EngineConfig:
    """The engine config a step of model `name` runs with: the model's own, or a client of
    its service."""
    if spec.placement == "in_stage":
        return spec.engine
    endpoint = ServiceEndpoint(
        app=service_app_name(run_id, name),
        request_timeout_s=spec.request_timeout_s,
        max_retries=spec.max_retries,
    )
    return spec.engine.model_copy(update={"kind": SERVICE_KIND, "service": endpoint})


def services(models: dict[str, ModelSpec], config: Any) -> dict[str, ModelSpec]:
    """The models placed as services that some step of the run uses."""
    used = {step.model for _, step in model_steps(config) if step.model is not None}
    return {
        name: spec for name, spec in models.items() if spec.placement == "service" and name in used
    }


def place_models(config: Any, run_id: str) -> Any:
    """A copy of the run config whose steps that name a model carry its placed engine."""
    placed = config.model_copy(deep=True)
    for _, step in model_steps(placed):
        if step.model is not None:
            step.engine = placed_engine(config.models[step.model], step.model, run_id)
    return placed


# vLLM's own default when gpu_memory_utilization is left unset
VLLM_DEFAULT_MEMORY_FRACTION = 0.92


class PlanError(ValueError):
    """The model layout cannot start: it is refused before anything is loaded."""


def service_min_replicas(spec: ModelSpec) -> int:
    autoscaling = spec.service.autoscaling
    return spec.service.num_replicas if autoscaling is None else max(1, autoscaling.min_replicas)


def _memory_fraction(engine: EngineConfig) -> float:
    if engine.kind != "vllm":
        return 0.0  # the other engines allocate as they go; nothing reserved up front
    fraction = engine.vllm.gpu_memory_utilization
    return VLLM_DEFAULT_MEMORY_FRACTION if fraction is None else fraction


def check_gpu_memory(config: Any) -> None:
    """Engines that reserve a share of a GPU's memory must fit on the GPUs they share.

    An actor or replica holding g GPUs runs its engines on the same device(s); with g < 1,
    Ray packs 1/g of them onto one GPU, so their engines get at most g of its memory.
    """
    units: dict[str, tuple[float, list[tuple[str, float]]]] = {}
    for where, step in model_steps(config):
        if step.model is not None and config.models[step.model].placement == "service":
            continue
        stage = where.split(".")[0]
        gpus = getattr(config, stage).resources.num_gpus
        engines = units.setdefault(f"stage {stage!r}", (gpus, []))[1]
        label = step.model or step.engine.model
        engine = config.models[step.model].engine if step.model else step.engine
        if label not in (name for name, _ in engines):
            engines.append((label, _memory_fraction(engine)))
    for name, spec in config.models.items():
        units[f"model service {name!r}"] = (
            spec.service.num_gpus,
            [(name, _memory_fraction(spec.engine))],
        )
    for unit, (gpus, engines) in units.items():
        _check_unit(unit, gpus, engines)


def _check_unit(unit: str, gpus: float, engines: list[tuple[str, float]]) -> None:
    total = sum(fraction for _, fraction in engines)
    limit = min(1.0, gpus)
    if gpus <= 0 or total <= limit + 1e-9:
        return
    shares = " + ".join(f"{name} {fraction:g}" for name, fraction in engines)
    why = (
        f"Ray puts {int(1 / gpus)} of them on one GPU (num_gpus {gpus:g})"
        if gpus < 1
        else f"they share its GPU (num_gpus {gpus:g})"
    )
    raise PlanError(
        f"{unit}: vLLM engines reserve {shares} = {total:g} of a GPU's memory, above "
        f"{limit:g}: {why}. Lower vllm.gpu_memory_utilization, or place the models as "
        "services (models.<name>.placement: service) with a GPU each"
    )


def service_reservations(
    models: dict[str, ModelSpec], config: Any
) -> list[tuple[str, int, float, float]]:
    """(who, replicas at least, CPUs each, GPUs each) for the run's model services."""
    return [
        (
            f"model service {name!r}",
            service_min_replicas(spec),
            spec.service.num_cpus,
            spec.service.num_gpus,
        )
        for name, spec in services(models, config).items()
    ]


def _engines(config: Any) -> dict[str, EngineConfig]:
    """Every engine config of the run: the named models', and the steps' own."""
    engines = {f"models.{name}": spec.engine for name, spec in config.models.items()}
    engines |= {where: step.engine for where, step in model_steps(config) if step.model is None}
    return engines


def _check_not_an_adapter(where: str, engine: EngineConfig) -> None:
    from pathlib import Path

    from factory.models.adapter_check import ADAPTER_CONFIG

    folder = Path(engine.model).expanduser()
    if "://" not in engine.model and (folder / ADAPTER_CONFIG).is_file():
        raise PlanError(
            f"{where}: {engine.model} is a PEFT adapter, not a model: name its base model in "
            f"engine.model and the adapter in engine.adapters (NAME: {engine.model}), then "
            "pick it with `adapter: NAME`"
        )


def check_adapters_loadable(config: Any) -> None:
    """Every adapter a model or step names is one its engine can load (read from the
    adapter's files; s3:// adapters are fetched into the local cache to look), and no
    model is an adapter folder."""
    from factory.models.adapter_check import adapter_problem
    from factory.models.weights import resolve_model_path

    for where, engine in _engines(config).items():
        _check_not_an_adapter(where, engine)
        if engine.kind not in ("transformers", "vllm"):
            continue  # a server's adapters are names it serves; plugins load their own
        for adapter, path in engine.adapters.items():
            problem = adapter_problem(engine, resolve_model_path(path, engine.cache_dir))
            if problem:
                raise PlanError(
                    f"{where}: adapter {adapter!r} ({path}) cannot be loaded by the "
                    f"{engine.kind} engine: {problem}"
                )


def unpicked_adapters(config: Any) -> list[str]:
    """Notes for steps whose engine declares adapters but which pick none: declaring an
    adapter does not apply it (a step says `adapter: NAME`)."""
    notes = []
    for where, step in model_steps(config):
        declared = step.engine.adapters
        if declared and step.adapter is None:
            notes.append(
                f"{where} generates with the base model of {step.engine.model}; its adapters "
                f"{sorted(declared)} apply only where a step names one ({where}.adapter)"
            )
    return notes
