"""A run's model services: each `placement: service` model as its own Serve application.

The deployment is `ModelServer`, the same class `factory serve` runs, so the pipeline's
model and the served model are one object with one set of options. The applications have
no HTTP route (the stages reach them through deployment handles), are named per run, and
are deleted when the run ends, failed or not. A Serve the run started for them (without
HTTP proxies) is shut down with them, so a later `factory serve` on the same cluster
starts its own with HTTP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from factory.models.placement import service_app_name
from factory.serve.serve_config import ServeConfig

if TYPE_CHECKING:
    from factory.models.placement import ModelSpec


def service_config(name: str, spec: ModelSpec, run_id: str) -> ServeConfig:
    """The ServeConfig of model `name`'s service: its engine, adapters and replicas."""
    return ServeConfig(
        app_name=service_app_name(run_id, name),
        model_name=name,
        engine=spec.engine.model_copy(update={"adapters": {}}),
        adapters=dict(spec.engine.adapters),
        model_deployment=spec.service,
    )


class ServiceStartError(ValueError):
    """A model service's replicas could not load the model (a bad path, options, weights)."""

    def __init__(self, model: str, why: str):
        super().__init__(f"model service {model!r} did not start: {why}")


def _why_failed(app: str, error: Exception) -> str:
    """The replica's own error (the last line of its traceback), not Serve's summary."""
    from ray import serve

    try:
        deployment = serve.status().applications[app].deployments["model"]
    except KeyError:
        return str(error)
    lines = [line.strip() for line in deployment.message.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0] or "error" in line]
    return (errors or lines or [str(error)])[-1]


@dataclass
class RunningServices:
    """The applications a run deployed, and whether it started Serve itself."""

    apps: list[str] = field(default_factory=list)
    started_serve: bool = False


def start_model_services(services: dict[str, ModelSpec], run_id: str) -> RunningServices:
    """Deploy each service and wait until its replicas have loaded.

    Serve is started without HTTP proxies if it is not running yet; a Serve already running
    on the cluster (say, `factory serve`) is joined as it is.
    """
    from ray import serve
    from ray.serve.context import _get_global_client

    from factory.serve.model_deployment import ModelServer

    running = RunningServices()
    if not services:
        return running
    running.started_serve = _get_global_client(raise_if_no_controller_running=False) is None
    serve.start(proxy_location="Disabled")
    started = running.apps
    try:
        for name, spec in services.items():
            config = service_config(name, spec, run_id)
            deployment = serve.deployment(name="model", **spec.service.serve_options())
            app = deployment(ModelServer).bind(config)
            print(f"starting model service {name!r} ({config.app_name})", flush=True)
            began = time.perf_counter()
            # returns once every replica's constructor (the engine load) has finished
            started.append(config.app_name)
            try:
                serve.run(app, name=config.app_name, route_prefix=None)
            except RuntimeError as error:
                raise ServiceStartError(name, _why_failed(config.app_name, error)) from None
            print(f"model service {name!r} ready in {time.perf_counter() - began:.1f}s")
    except BaseException:
        stop_model_services(running)
        raise
    return running


def stop_model_services(running: RunningServices) -> None:
    """Delete the run's service applications (their replicas finish what they hold)."""
    from ray import serve

    for app in running.apps:
        serve.delete(app)
    if running.started_serve:
        serve.shutdown()
