"""The FastAPI routes of the ingress, built per replica around one ApiServer.

Bodies are parsed by hand rather than by FastAPI's parameter binding, so that every
failure has this API's own status and error body: malformed JSON 400, a wrong field 422
naming it, a body over the limit 413 (checked from Content-Length and again while
reading, for chunked uploads).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from factory.serve import openai_chat
from factory.serve.api_server import ApiServer
from factory.serve.auth import check_bearer
from factory.serve.body_limit import BodyLimit, BodyTooLarge
from factory.serve.errors import ApiError
from factory.serve.schemas import CaptionRequest, ChatCompletionRequest, ImageFields, QARequest

logger = logging.getLogger("ray.serve")


def build_http_api(server: ApiServer) -> FastAPI:
    app = FastAPI(title="caption factory", docs_url=None, redoc_url=None)
    app.add_middleware(BodyLimit, max_bytes=server.config.limits.max_body_bytes)
    _add_error_handlers(app)

    def authorize(request: Request) -> None:
        check_bearer(request.headers.get("authorization"), server.api_keys)

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

    @app.post("/v1/caption")
    async def caption(request: Request) -> dict[str, Any]:
        authorize(request)
        body, upload = await _parsed(request, CaptionRequest)
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
        body, upload = await _parsed(request, QARequest)
        model = body.model or server.config.model_name
        server.adapter_for(model)
        image = await _image(server, body, upload)
        return await server.tasks.answer(
            model, image, body.question, server.params(body.max_new_tokens)
        )

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Any:
        authorize(request)
        body = _validated(ChatCompletionRequest, await _json(request))
        server.adapter_for(body.model)
        config = server.config
        params = openai_chat.generation_params(
            body, config.generation, config.limits.max_new_tokens
        )
        chat_request = await openai_chat.chat_request(body, server.images.from_url)
        generated = await server.generate(body.model, [chat_request], params)
        text = generated.texts[0]
        if body.stream:
            return StreamingResponse(
                openai_chat.stream_chunks(body.model, text), media_type="text/event-stream"
            )
        lineage = {
            "base_model": generated.model,
            "revision": generated.revision,
            "adapter": generated.adapter,
            "adapter_revision": generated.adapter_revision,
            "engine": generated.engine,
        }
        return openai_chat.completion(body.model, text, lineage)

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse(error.body(), status_code=error.status, headers=error.headers)

    @app.exception_handler(BodyTooLarge)
    async def too_large(request: Request, error: BodyTooLarge) -> JSONResponse:
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


async def _json(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {error}") from None


def _validated(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc']) or 'body'}: {e['msg']}"
            for e in error.errors()
        )
        first = error.errors()[0]["loc"]
        raise ApiError(422, "invalid_request", problems, str(first[0]) if first else None) from None


async def _parsed(request: Request, model: type[ImageFields]) -> tuple[Any, bytes | None]:
    """The body as `model`, from JSON or multipart/form-data (with the image uploaded)."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return _validated(model, await _json(request)), None
    try:
        form = await request.form()
    except StarletteHTTPException as error:  # Starlette's answer to a malformed multipart
        raise ApiError(
            400, "invalid_multipart", f"malformed multipart body: {error.detail}"
        ) from None
    fields: dict[str, Any] = {}
    upload: bytes | None = None
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key != "image":
                raise ApiError(422, "invalid_request", f"unexpected file field {key!r}", key)
            upload = await value.read()
        elif key == "catalogue":
            try:
                fields[key] = json.loads(value)
            except ValueError:
                raise ApiError(400, "invalid_json", "catalogue is not valid JSON", key) from None
        else:
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
