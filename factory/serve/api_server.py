"""The HTTP ingress: checks requests, then calls the model deployment through its handle.

A plain class; `factory.serve.app` makes it a Serve deployment with `serve.ingress`, which
calls `__serve_build_asgi_app__` on each replica for the FastAPI routes (`http_api`).
Everything a client can get wrong is refused here, before a model replica spends time:
auth, body size, JSON, model name, style, image checks, URL fetch limits. The model
deployment's bounded queue turns overload into a 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ray.exceptions import RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from factory.models.engine import ChatRequest, GenerationParams
from factory.serve.auth import read_api_keys
from factory.serve.config import ServeConfig
from factory.serve.errors import ApiError
from factory.serve.image_input import ImageInput, image_limits
from factory.serve.model_server import Generated
from factory.serve.tasks import Tasks
from factory.serve.url_fetch import ImageFetcher


class ApiServer:
    def __init__(self, config: ServeConfig, model: Any):
        self.config, self.model = config, model
        self.api_keys = read_api_keys(config.auth)
        fetcher = ImageFetcher(config.url_fetch, config.limits.max_image_bytes)
        limits = image_limits(config.limits, config.engine.max_image_side)
        self.images = ImageInput(limits, fetcher)
        self.tasks = Tasks(config, self.generate)
        self.created = int(time.time())
        self._handles: dict[str | None, Any] = {None: model}

    def __serve_build_asgi_app__(self) -> Any:
        from factory.serve.http_api import build_http_api

        return build_http_api(self)

    def adapter_for(self, model: str | None) -> str | None:
        """The adapter a `model` field selects (None: the base); 404 for an unknown name."""
        if model is None or model == self.config.model_name:
            return None
        if model in self.config.adapters:
            return model
        raise ApiError(
            404,
            "model_not_found",
            f"model {model!r} is not served; GET /v1/models lists {self.config.served_models()}",
            "model",
        )

    async def generate(
        self, model: str, requests: list[ChatRequest], params: GenerationParams
    ) -> Generated:
        adapter = self.adapter_for(model)
        response = self._handle(adapter).generate.remote(requests, params)
        timeout = self.config.limits.request_timeout_s
        try:
            return await asyncio.wait_for(_result(response), timeout)
        except asyncio.TimeoutError:
            response.cancel()
            raise ApiError(
                504, "timeout", f"the model did not answer within {timeout:g} s"
            ) from None
        except RayTaskError as error:
            if isinstance(error.cause, ApiError):  # the model refused the request itself
                raise error.cause from None
            raise
        except BackPressureError:
            raise self._overloaded("the model queue is full") from None
        except DeploymentUnavailableError:
            raise self._overloaded("the model deployment is unavailable") from None

    async def ready(self) -> dict[str, str]:
        try:
            return await asyncio.wait_for(_result(self.model.ready.remote()), 5.0)
        except (asyncio.TimeoutError, BackPressureError, DeploymentUnavailableError):
            raise ApiError(503, "not_ready", "the model deployment is not ready") from None

    def params(self, max_new_tokens: int | None) -> GenerationParams:
        if max_new_tokens is None:
            return self.config.generation
        limit = self.config.limits.max_new_tokens
        if max_new_tokens > limit:
            raise ApiError(
                422,
                "max_tokens_too_large",
                f"max_new_tokens {max_new_tokens} is above this server's limit of {limit}",
                "max_new_tokens",
            )
        return self.config.generation.model_copy(update={"max_new_tokens": max_new_tokens})

    def _handle(self, adapter: str | None) -> Any:
        if adapter not in self._handles:
            # routes the call to replicas that already hold the adapter, when there are any
            self._handles[adapter] = self.model.options(multiplexed_model_id=adapter)
        return self._handles[adapter]

    def _overloaded(self, why: str) -> ApiError:
        retry = str(self.config.limits.retry_after_s)
        return ApiError(503, "overloaded", f"{why}; retry later", None, {"Retry-After": retry})


async def _result(response: Any) -> Any:
    return await response
