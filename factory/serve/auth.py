"""Bearer API keys: read once per replica from the environment, compared in constant time."""

from __future__ import annotations

import hmac
import os

from factory.serve.api_errors import ApiError
from factory.serve.serve_config import AuthConfig

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def read_api_keys(config: AuthConfig) -> list[bytes] | None:
    """The accepted keys, or None when auth is off. Configured but unset: refuse to start,
    rather than serve without the protection the config asked for."""
    if config.api_keys_env is None:
        return None
    keys = [key.strip() for key in os.environ.get(config.api_keys_env, "").split(",")]
    keys = [key for key in keys if key]
    if not keys:
        raise RuntimeError(
            f"auth.api_keys_env is {config.api_keys_env!r} but that environment variable is "
            "unset or empty on this replica; set it (comma-separated keys) or set "
            "auth.api_keys_env to null"
        )
    return [key.encode() for key in keys]


def check_bearer(authorization: str | None, keys: list[bytes] | None) -> None:
    """Raise 401 unless `authorization` is 'Bearer <one of keys>' (or auth is off)."""
    if keys is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "missing_api_key",
            "send an API key as 'Authorization: Bearer KEY'",
            None,
            _CHALLENGE,
        )
    offered = token.strip().encode()
    # compare with every key, without stopping early, so timing says nothing about which
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(offered, key)
    if not matched:
        raise ApiError(401, "invalid_api_key", "the API key is not valid", None, _CHALLENGE)
