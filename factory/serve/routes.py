"""The FastAPI routes of the ingress, built per replica around one ApiServer.

Bodies are parsed by hand rather than by FastAPI's parameter binding, so that every
failure has this API's own status and error body: malformed JSON 400, a wrong field 422
naming it, a body over the limit 413 (checked from Content-Length and again while
reading, for chunked uploads), a stalled upload 408. JSON bodies are bounded in depth,
keys, text length and message count before validation (`json_body`); the 422 of a body
with many problems lists the first few. `/openapi.json` is behind the API keys; Serve's
own `/-/routes` and `/-/healthz` are answered by its proxy, outside this app (they name
route prefixes and app names only).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from factory.models.engine import Completion
from factory.serve import openai_chat
from factory.serve.api_errors import ApiError
from factory.serve.auth import check_bearer
from factory.serve.body_limit import BodyLimit, BodyStalled, BodyTooLarge
from factory.serve.chat_stream import sse_events
from factory.serve.json_body import check_text, parse_json
from factory.serve.schemas import CaptionRequest, ChatCompletionRequest, ImageFields, QARequest
from factory.serve.serve_config import RequestLimits

if TYPE_CHECKING:  # the server builds these routes around itself
    from factory.serve.ingress import ApiServer

logger = logging.getLogger("ray.serve")
# validation problems listed in a 422: enough to act on, never megabytes
_PROBLEMS_SHOWN = 5


def build_http_api(server: ApiServer) -> FastAPI:
    limits = server.config.limits
    # the schema is served by the route below, behind the same auth as the API
    app = FastAPI(title="caption factory", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(
        BodyLimit, max_bytes=limits.max_body_bytes, read_timeout_s=limits.body_read_timeout_s
    )
    _add_error_handlers(app)

    def authorize(request: Request) -> None:
        check_bearer(request.headers.get("authorization"), server.api_keys)

    _add_info_routes(app, server, authorize)
    _add_task_routes(app, server, authorize)
    _add_chat_route(app, server, authorize)
    return app


Authorize = Callable[[Request], None]


def _add_info_routes(app: FastAPI, server: ApiServer, authorize: Authorize) -> None:
    """The schema, probes and model list."""

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi(request: Request) -> dict[str, Any]:
        authorize(request)
        return app.openapi()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        # unauthenticated like a probe must be: it says ready or not, nothing about the model
        await server.ready()
        return {"status": "ready"}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        authorize(request)
        config = server.config
        return openai_chat.models_list(config.served_models(), config.model_name, server.created)

    @app.get("/v1/models/{name}")
    async def model(name: str, request: Request) -> dict[str, Any]:
        authorize(request)
        server.adapter_for(name)
        return openai_chat.model_card(name, server.config.model_name, server.created)


def _add_task_routes(app: FastAPI, server: ApiServer, authorize: Authorize) -> None:
    """The factory's own tasks: caption and QA, JSON or multipart with an image."""
    limits = server.config.limits

    @app.post("/v1/caption")
    async def caption(request: Request) -> dict[str, Any]:
        authorize(request)
        body, upload = await _parsed(request, CaptionRequest, limits)
        model = body.model or server.config.model_name
        server.adapter_for(model)
        server.tasks.check_style(body.style)
        image = await _image(server, body, upload)
        catalogue = body.catalogue.model_dump(exclude_none=True) if body.catalogue else {}
        params = server.params(body.max_new_tokens)
        return await server.tasks.caption(model, image, body.style, catalogue, body.critic, params)

    @app.post("/v1/qa")
    async def qa(request: Request) -> dict[str, Any]:
        authorize(request)
        body, upload = await _parsed(request, QARequest, limits)
        model = body.model or server.config.model_name
        server.adapter_for(model)
        image = await _image(server, body, upload)
        return await server.tasks.answer(
            model, image, body.question, server.params(body.max_new_tokens)
        )


def _add_chat_route(app: FastAPI, server: ApiServer, authorize: Authorize) -> None:
    """OpenAI's chat completions, streamed or whole."""
    limits = server.config.limits

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        authorize(request)
        check_messages = functools.partial(openai_chat.check_message_count, limits=limits)
        data = parse_json(await request.body(), limits, check_messages)
        body = _validated(ChatCompletionRequest, data)
        server.adapter_for(body.model)
        params = openai_chat.generation_params(
            body, server.config.generation, limits.max_new_tokens
        )
        stops = openai_chat.stop_sequences(body, limits)
        chat_request = await openai_chat.chat_request(body, server.images.from_url)
        if body.stream:
            chunks = await server.stream(body.model, chat_request, params)
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = sse_events(body.model, chunks, stops, include_usage)
            return StreamingResponse(events, media_type="text/event-stream")
        generated = await server.generate(body.model, [chat_request], params)
        completion = (generated.completions or [Completion(generated.texts[0])])[0]
        lineage = {
            "base_model": generated.model,
            "revision": generated.revision,
            "adapter": generated.adapter,
            "adapter_revision": generated.adapter_revision,
            "engine": generated.engine,
        }
        return openai_chat.completion_body(
            body.model, openai_chat.cut_at_stop(completion, stops), lineage
        )


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, error: BodyTooLarge) -> JSONResponse:
        return await api_error(request, error.api_error())

    @app.exception_handler(BodyStalled)
    async def stalled(request: Request, error: BodyStalled) -> JSONResponse:
        return await api_error(request, error.api_error())

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        # the details go to the replica's log, not to the client
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        failure = ApiError(500, "internal_error", "the server failed on this request")
        return await api_error(request, failure)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        return await api_error(request, ApiError(error.status_code, code, str(error.detail)))


def _validated(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        errors = error.errors(include_url=False, include_input=False)
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}"
            for e in errors[:_PROBLEMS_SHOWN]
        )
        if len(errors) > _PROBLEMS_SHOWN:
            problems += f"; and {len(errors) - _PROBLEMS_SHOWN} more"
        first = errors[0]["loc"]
        raise ApiError(422, "invalid_request", problems, str(first[0]) if first else None) from None


async def _parsed(
    request: Request, model: type[ImageFields], limits: RequestLimits
) -> tuple[Any, bytes | None]:
    """The body as `model`, from JSON or multipart/form-data (with the image uploaded)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return _validated(model, parse_json(await request.body(), limits)), None
    try:
        form = await request.form()
    except StarletteHTTPException as error:  # Starlette's answer to a malformed multipart
        raise ApiError(
            400, "invalid_multipart", f"malformed multipart body: {error.detail}"
        ) from None
    fields: dict[str, Any] = {}
    upload: bytes | None = None
    for key, value in form.multi_items():
        if key in fields or (key == "image" and upload is not None):
            raise ApiError(422, "invalid_request", f"field {key!r} is sent more than once", key)
        if isinstance(value, UploadFile):
            if key != "image":
                raise ApiError(422, "invalid_request", f"unexpected file field {key!r}", key)
            upload = await value.read()
        elif key == "catalogue":
            fields[key] = parse_json(value, limits)
        else:
            check_text(value, key, limits)
            fields[key] = value
    return _validated(model, fields), upload


async def _image(server: ApiServer, body: ImageFields, upload: bytes | None) -> bytes:
    sources = [s for s in (body.image, body.image_url, upload) if s is not None]
    if len(sources) != 1:
        raise ApiError(
            422,
            "invalid_request",
            "send exactly one image: image (base64 or data URL), image_url, or a "
            f"multipart file named image; got {len(sources)}",
            "image",
        )
    if upload is not None:
        return await server.images.checked(upload)
    if body.image is not None:
        return await server.images.from_base64(body.image)
    return await server.images.from_url(body.image_url)
