"""OpenAI chat-completions bodies <-> the factory's ChatRequest.

The engines take one prompt, at most one image and a system text per request. A single
user turn maps onto that exactly; earlier turns of a longer conversation are written into
the prompt as a transcript (the model's chat template sees one user turn then).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from factory.models.engine import ChatRequest, GenerationParams
from factory.serve.errors import ApiError
from factory.serve.schemas import ChatCompletionRequest, ChatMessage

FetchImage = Callable[[str], Awaitable[bytes]]


def generation_params(
    body: ChatCompletionRequest, default: GenerationParams, max_new_tokens: int
) -> GenerationParams:
    tokens = body.max_completion_tokens or body.max_tokens or default.max_new_tokens
    if tokens > max_new_tokens:
        raise ApiError(
            422,
            "max_tokens_too_large",
            f"max_tokens {tokens} is above this server's limit of {max_new_tokens}",
            "max_tokens",
        )
    return GenerationParams(
        max_new_tokens=tokens,
        temperature=default.temperature if body.temperature is None else body.temperature,
        top_p=default.top_p if body.top_p is None else body.top_p,
        seed=default.seed if body.seed is None else body.seed,
    )


async def chat_request(body: ChatCompletionRequest, fetch_image: FetchImage) -> ChatRequest:
    refused = body.unsupported()
    if refused:
        raise ApiError(400, "unsupported_parameter", "not supported here: " + ", ".join(refused))
    system = [_text(m) for m in body.messages if m.role in ("system", "developer")]
    turns = [m for m in body.messages if m.role not in ("system", "developer")]
    if not turns or turns[-1].role != "user":
        raise ApiError(
            400, "invalid_messages", "the last message must be from the user", "messages"
        )
    urls = [url for message in turns for url in _image_urls(message)]
    if len(urls) > 1:
        raise ApiError(
            400, "too_many_images", f"one image per request is supported, got {len(urls)}"
        )
    image = await fetch_image(urls[0]) if urls else None
    if len(turns) == 1:
        prompt = _text(turns[0])
    else:
        prompt = "\n".join(f"{m.role.capitalize()}: {_text(m)}" for m in turns)
    return ChatRequest(prompt=prompt, image=image, system="\n".join(system) or None)


def _text(message: ChatMessage) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    return "\n".join(part.text or "" for part in message.content if part.type == "text")


def _image_urls(message: ChatMessage) -> list[str]:
    if not isinstance(message.content, list):
        return []
    urls = []
    for part in message.content:
        if part.type == "image_url":
            if part.image_url is None or not part.image_url.url:
                raise ApiError(400, "invalid_messages", "an image_url part has no url", "messages")
            if message.role != "user":
                raise ApiError(400, "invalid_messages", "only user messages may carry images")
            urls.append(part.image_url.url)
    return urls


def completion(model: str, text: str, lineage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                # the engines do not report why generation stopped
                "finish_reason": "stop",
            }
        ],
        "lineage": lineage,
    }


def stream_chunks(model: str, text: str) -> Iterator[str]:
    """Server-sent events for `stream: true`: the whole text in one chunk, then the end."""
    base = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }
    deltas = (
        {"delta": {"role": "assistant", "content": text}, "finish_reason": None},
        {"delta": {}, "finish_reason": "stop"},
    )
    for delta in deltas:
        yield f"data: {json.dumps({**base, 'choices': [{'index': 0, **delta}]})}\n\n"
    yield "data: [DONE]\n\n"


def models_list(names: list[str], base: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(name, base, created) for name in names]}


def model_card(name: str, base: str, created: int) -> dict[str, Any]:
    card = {"id": name, "object": "model", "created": created, "owned_by": "caption-factory"}
    if name != base:
        card["parent"] = base
    return card
