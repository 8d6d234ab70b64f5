"""Start a serving app the way `factory serve` does, on a free port of 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

from factory.serve.serve_config import ServeConfig


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_config(**fields: Any) -> ServeConfig:
    """A test config: small CPU shares so the app fits the 2-CPU local Ray beside others."""
    tree: dict[str, Any] = {
        "http": {"host": "127.0.0.1", "port": free_port()},
        "api_deployment": {"num_cpus": 0.05, "max_ongoing_requests": 256},
        "model_deployment": {"num_cpus": 0.25},
    }
    for key, value in fields.items():
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key] = {**tree[key], **value}
        else:
            tree[key] = value
    return ServeConfig.model_validate(tree)


@contextlib.contextmanager
def running_app(config: ServeConfig) -> Iterator[str]:
    """Deploys through factory.serve.app_builder.start (the CLI's path); yields the base URL."""
    from ray import serve

    from factory.serve.app_builder import start

    url = start(config)
    try:
        yield url
    finally:
        serve.shutdown()
