"""The builder: ServeConfig -> Serve application. The only place Serve options are applied.

Two deployments: the HTTP ingress (`ApiServer`: parsing, auth, image checks, URL fetches;
cheap, many concurrent requests) and the model (`ModelServer`: one engine per replica,
batched, autoscaled on ongoing requests, a bounded queue). The ingress reaches the model
through a deployment handle with the adapter as multiplexed model id.

- `build_application(config)`: what `factory serve` and the tests run.
- `build_app(args)`: the import path for `serve run` / `serve deploy` config files
  (`import_path: factory.serve.app_builder:build_app`), args either the config inline or
  `{config_path: ..., overrides: [...]}`.
- `run_locally(config)`: start Serve on this machine, block until Ctrl-C, shut down
  gracefully (each replica finishes its requests within graceful_shutdown_timeout_s).
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from factory.serve.serve_config import ServeConfig


def build_application(config: ServeConfig) -> Any:
    from ray import serve

    from factory.serve.ingress import ApiServer
    from factory.serve.model_deployment import ModelServer

    model = serve.deployment(name="model", **config.model_deployment.serve_options())(ModelServer)
    # serve.ingress() without an app: ApiServer builds its FastAPI app on each replica
    ingress = serve.deployment(name="api", **config.api_deployment.serve_options())(
        serve.ingress()(ApiServer)
    )
    return ingress.bind(config, model.bind(config))


def build_app(args: dict[str, Any]) -> Any:
    """Serve's app-builder entry point (`serve run factory.serve.app_builder:build_app ...`)."""
    from factory.config_loading import load_config

    args = dict(args)
    path = args.pop("config_path", None)
    overrides = list(args.pop("overrides", []))
    if path is not None:
        if args:
            raise ValueError(f"give config_path or the config inline, not both: {sorted(args)}")
        return build_application(load_config(path, overrides, model=ServeConfig))
    if overrides:
        raise ValueError("overrides go with config_path; edit an inline config directly")
    return build_application(ServeConfig.model_validate(args))


def start(config: ServeConfig) -> str:
    """Deploy on a local (or given) Ray; returns the base URL. Does not block."""
    import ray
    from ray import serve

    if not ray.is_initialized():
        # "local": a fresh Ray unless RAY_ADDRESS (set inside `ray job submit`) names one
        ray.init(address=config.ray_address or "local", include_dashboard=False)
    serve.start(
        http_options={
            "host": config.http.host,
            "port": config.http.port,
            "request_timeout_s": config.proxy_timeout_s(),
            "keep_alive_timeout_s": config.http.keep_alive_timeout_s,
        },
        logging_config={"enable_access_log": config.http.access_log},
    )
    serve.run(
        build_application(config),
        name=config.app_name,
        route_prefix=config.route_prefix,
        blocking=False,
    )
    host = "127.0.0.1" if config.http.host in ("0.0.0.0", "::") else config.http.host
    return f"http://{host}:{config.http.port}{config.route_prefix.rstrip('/')}"


def run_locally(config: ServeConfig) -> None:
    """Serve until Ctrl-C (or SIGTERM), then delete the app gracefully and stop Serve.

    Both signals get explicit handlers: a shell starts background jobs with SIGINT ignored,
    and Python then never turns Ctrl-C into KeyboardInterrupt, so a server started from a
    script would ignore `kill -INT` forever. A second signal while stopping exits at once.
    """
    from ray import serve

    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        if stop.is_set():
            raise SystemExit(128 + signum)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        url = start(config)
        print(f"serving {config.served_models()} at {url} (Ctrl-C stops)", flush=True)
        while not stop.wait(1.0):  # a timed wait: the signal may land on another thread
            pass
        print("stopping: replicas finish their requests first (Ctrl-C again: now)", flush=True)
    finally:
        serve.delete(config.app_name)
        serve.shutdown()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
