"""OpenAI chat-completions bodies <-> the factory's ChatRequest and Completion.

The engines take one prompt, at most one image and a system text per request. A single
user turn maps onto that exactly; earlier turns of a longer conversation are written into
the prompt as a transcript (the model's chat template sees one user turn then). Replies
go back as OpenAI's chat.completion or, streamed, as chat.completion.chunk events.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from factory.models.engine import ChatRequest, Completion, GenerationParams
from factory.serve.api_errors import ApiError
from factory.serve.schemas import ChatCompletionRequest, ChatMessage
from factory.serve.serve_config import RequestLimits

FetchImage = Callable[[str], Awaitable[bytes]]
# vLLM decodes greedily below this temperature; so do we, instead of dividing by ~0.
GREEDY_BELOW = 1e-5


def check_message_count(data: Any, limits: RequestLimits) -> None:
    """Before validation: a chat of 50,000 messages is refused without reading them."""
    messages = data.get("messages") if isinstance(data, dict) else None
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise ApiError(
            413,
            "too_many_messages",
            f"the chat has {len(messages):,} messages; the limit is {limits.max_messages}",
            "messages",
        )


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
    temperature = default.temperature if body.temperature is None else body.temperature
    return GenerationParams(
        max_new_tokens=tokens,
        temperature=0.0 if temperature < GREEDY_BELOW else temperature,
        top_p=default.top_p if body.top_p is None else body.top_p,
        seed=default.seed if body.seed is None else body.seed,
    )


def stop_sequences(body: ChatCompletionRequest, limits: RequestLimits) -> list[str]:
    stops = body.stop_sequences()
    if len(stops) > limits.max_stop_sequences:
        raise ApiError(
            400,
            "too_many_stop_sequences",
            f"at most {limits.max_stop_sequences} stop sequences, got {len(stops)}",
            "stop",
        )
    if any(not stop for stop in stops):
        raise ApiError(400, "invalid_stop", "stop sequences must not be empty", "stop")
    return stops


async def chat_request(body: ChatCompletionRequest, fetch_image: FetchImage) -> ChatRequest:
    refused = body.unsupported()
    if refused:
        raise ApiError(400, "unsupported_parameter", "not supported here: " + ", ".join(refused))
    # every message's parts are checked, so an image where none is taken is refused
    urls = [url for message in body.messages for url in _image_urls(message)]
    system = [_text(m) for m in body.messages if m.role in ("system", "developer")]
    turns = [m for m in body.messages if m.role not in ("system", "developer")]
    if not turns or turns[-1].role != "user":
        raise ApiError(
            400, "invalid_messages", "the last message must be from the user", "messages"
        )
    if len(urls) > 1:
        raise ApiError(
            400, "too_many_images", f"one image per request is supported, got {len(urls)}"
        )
    image = await fetch_image(urls[0]) if urls else None
    if len(turns) == 1:
        prompt = _text(turns[0])
    else:
        prompt = "\n".join(f"{m.role.capitalize()}: {_text(m)}" for m in turns)
    schema = body.response_format.schema_for_request() if body.response_format else None
    return ChatRequest(
        prompt=prompt, image=image, system="\n".join(system) or None, json_schema=schema
    )


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
            if message.role != "user":
                raise ApiError(
                    400,
                    "invalid_messages",
                    f"only user messages may carry images, not {message.role} messages",
                    "messages",
                )
            if part.image_url is None or not part.image_url.url:
                raise ApiError(400, "invalid_messages", "an image_url part has no url", "messages")
            urls.append(part.image_url.url)
    return urls


def cut_at_stop(completion: Completion, stops: list[str]) -> Completion:
    """The reply up to its first stop sequence (finish reason stop), else as it is."""
    found = [i for stop in stops if (i := completion.text.find(stop)) >= 0]
    if not found:
        return completion
    return Completion(
        completion.text[: min(found)],
        "stop",
        completion.prompt_tokens,
        completion.completion_tokens,
    )


def usage(completion: Completion | None) -> dict[str, int] | None:
    if completion is None or completion.prompt_tokens is None:
        return None
    generated = completion.completion_tokens or 0
    return {
        "prompt_tokens": completion.prompt_tokens,
        "completion_tokens": generated,
        "total_tokens": completion.prompt_tokens + generated,
    }


def completion_body(model: str, completion: Completion, lineage: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": completion.text},
                "logprobs": None,
                "finish_reason": completion.finish_reason,
            }
        ],
        "usage": usage(completion),
        "lineage": lineage,
    }


def models_list(names: list[str], base: str, created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(name, base, created) for name in names]}


def model_card(name: str, base: str, created: int) -> dict[str, Any]:
    card = {"id": name, "object": "model", "created": created, "owned_by": "caption-factory"}
    if name != base:
        card["parent"] = base
    return card
