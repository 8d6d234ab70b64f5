"""The HTTP ingress: checks requests, then calls the model deployment through its handle.

A plain class; `factory.serve.app_builder` makes it a Serve deployment with
`serve.ingress`, which calls `__serve_build_asgi_app__` on each replica for the FastAPI
routes (`routes.build_http_api`).
Everything a client can get wrong is refused here, before a model replica spends time:
auth, body size, JSON, model name, style, image checks, URL fetch limits. The model
deployment's bounded queue turns overload into a 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from ray.exceptions import RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

from factory.models.engine import ChatRequest, GenerationParams, StreamChunk
from factory.serve.api_errors import ApiError, overloaded
from factory.serve.auth import read_api_keys
from factory.serve.caption_tasks import Tasks
from factory.serve.image_input import ImageInput, image_limits
from factory.serve.model_deployment import Generated
from factory.serve.request_gatherer import RequestGatherer
from factory.serve.serve_config import ServeConfig
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
        self._stream_handles: dict[str | None, Any] = {}
        options = config.model_deployment
        self.gatherer = (
            RequestGatherer(self._handle, options.max_batch_size, options.batch_wait_timeout_s)
            if config.gathers_in_ingress()
            else None
        )

    def __serve_build_asgi_app__(self) -> Any:
        from factory.serve.routes import build_http_api

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
        timeout = self.config.limits.request_timeout_s
        if self.gatherer is not None and len(requests) == 1:
            try:
                return await asyncio.wait_for(
                    self.gatherer.generate(adapter, requests[0], params), timeout
                )
            except BaseException as error:
                raise self._api_error(error, timeout) from None
        response = None
        try:
            response = self._handle(adapter).generate.remote(requests, params)
            return await asyncio.wait_for(_result(response), timeout)
        except BaseException as error:
            if response is not None and _abandoned(error):
                response.cancel()  # the model stops working on it
            raise self._api_error(error, timeout) from None

    async def stream(
        self, model: str, request: ChatRequest, params: GenerationParams
    ) -> AsyncIterator[StreamChunk]:
        """The reply's chunks; the first is awaited here, so a refusal is still a status."""
        adapter = self.adapter_for(model)
        timeout = self.config.limits.request_timeout_s
        deadline = time.monotonic() + timeout
        try:
            response = self._stream_handle(adapter).stream.remote(request, params)
        except BaseException as error:
            raise self._api_error(error, timeout) from None
        try:
            first = await self._next_chunk(response, deadline)
        except BaseException as error:
            if _abandoned(error):
                response.cancel()
            raise
        return self._chunks(response, first, deadline)

    async def _chunks(
        self, response: Any, first: StreamChunk | None, deadline: float
    ) -> AsyncIterator[StreamChunk]:
        chunk = first
        try:
            while chunk is not None:
                yield chunk
                chunk = await self._next_chunk(response, deadline)
        except BaseException as error:
            if _abandoned(error):
                response.cancel()  # the client left, or the deadline passed: stop generating
            raise

    async def _next_chunk(self, response: Any, deadline: float) -> StreamChunk | None:
        timeout = self.config.limits.request_timeout_s
        try:
            return await asyncio.wait_for(anext(response), deadline - time.monotonic())
        except StopAsyncIteration:
            return None
        except BaseException as error:
            raise self._api_error(error, timeout) from None

    def _api_error(self, error: BaseException, timeout: float) -> BaseException:
        """What a failed model call becomes: an ApiError, or the error itself (a bug)."""
        if isinstance(error, asyncio.TimeoutError):
            return ApiError(504, "timeout", f"the model did not answer within {timeout:g} s")
        if isinstance(error, RayTaskError) and isinstance(error.cause, ApiError):
            return error.cause  # the model refused the request itself
        if isinstance(error, BackPressureError):
            return self._overloaded("the model queue is full")
        if isinstance(error, DeploymentUnavailableError):
            return self._overloaded("the model deployment is unavailable")
        return error

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
            self._handles[adapter] = self.model.options(multiplexed_model_id=adapter or "")
        return self._handles[adapter]

    def _stream_handle(self, adapter: str | None) -> Any:
        if adapter not in self._stream_handles:
            self._stream_handles[adapter] = self._handle(adapter).options(stream=True)
        return self._stream_handles[adapter]

    def _overloaded(self, why: str) -> ApiError:
        return overloaded(why, self.config.limits.retry_after_s)


def _abandoned(error: BaseException) -> bool:
    """Whether a call was given up (its deadline passed, its client left), so the model
    should stop on it. A call that failed by itself is not cancelled: Serve would re-read
    the failed result and raise its error again."""
    if isinstance(error, ApiError):
        return error.status == 504
    return isinstance(error, asyncio.TimeoutError | asyncio.CancelledError | GeneratorExit)


async def _result(response: Any) -> Any:
    return await response
