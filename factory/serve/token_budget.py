"""Prompt tokens against the model's context, counted before a request reaches the engine.

Runs in the model deployment, where the engine's tokenizer already is: a request whose
prompt cannot fit is refused with OpenAI's 400 `context_length_exceeded` before it joins a
batch, for the HTTP ingress and the pipeline's service clients alike. Most prompts are
never tokenized: a byte-level or byte-fallback tokenizer makes at least one byte per
token, so a prompt whose UTF-8 length (plus room for the chat template's own tokens) fits
the budget fits as tokens too. Image tokens are the engine's business; the budget is text.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from factory.models.engine import ChatRequest, Completion, GenerationParams
from factory.serve.api_errors import ApiError

# Room for what the chat template adds around the texts (role markers, BOS, headers).
TEMPLATE_TOKENS = 64
# Context lengths tokenizers report when they do not know one (transformers' sentinel).
_UNKNOWN_CONTEXT = 1_000_000_000


class TokenBudget:
    """Counts prompt tokens with the engine's tokenizer; None where the engine has none."""

    def __init__(self, engine: Any, max_prompt_tokens: int | None):
        self.tokenizer = find_tokenizer(engine)
        self.context = max_context(engine)
        self.max_prompt_tokens = max_prompt_tokens

    def limit(self, params: GenerationParams) -> int | None:
        """Most prompt tokens a request with these params may bring; None: no known limit."""
        limits = [self.max_prompt_tokens] if self.max_prompt_tokens else []
        if self.context is not None:
            limits.append(self.context - params.max_new_tokens)
        return min(limits) if limits else None

    def check(self, requests: Sequence[ChatRequest], params: GenerationParams) -> None:
        limit = self.limit(params)
        if limit is None:
            return
        for request in requests:
            text = _text(request)
            if len(text.encode("utf-8", "surrogatepass")) + TEMPLATE_TOKENS <= limit:
                continue  # at least a byte per token: it fits without counting
            if self.tokenizer is None:
                continue  # nothing to count with; the engine enforces its own context
            tokens = self.count(text) + TEMPLATE_TOKENS
            if tokens > limit:
                raise ApiError(
                    400,
                    "context_length_exceeded",
                    f"the prompt is about {tokens:,} tokens; this model takes at most "
                    f"{limit:,} prompt tokens with max_tokens {params.max_new_tokens}",
                    "messages",
                )

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def with_counts(self, completion: Completion, request: ChatRequest) -> Completion:
        """The completion with token counts filled in where the engine left them out."""
        if self.tokenizer is None or None not in (
            completion.prompt_tokens,
            completion.completion_tokens,
        ):
            return completion
        return replace(
            completion,
            prompt_tokens=completion.prompt_tokens or self.count(_text(request)),
            completion_tokens=completion.completion_tokens or self.count(completion.text),
        )


def _text(request: ChatRequest) -> str:
    return f"{request.system}\n{request.prompt}" if request.system else request.prompt


def find_tokenizer(engine: Any) -> Any:
    """The engine's (or its wrapped base engine's) tokenizer, or None."""
    for owner in (engine, getattr(engine, "base", None)):
        if owner is None:
            continue
        tokenizer = getattr(owner, "tokenizer", None)
        if tokenizer is not None and hasattr(tokenizer, "encode"):
            return tokenizer
        llm = getattr(owner, "llm", None)  # vLLM: LLM or AsyncLLM
        tokenizer = getattr(llm, "tokenizer", None)
        if tokenizer is not None and hasattr(tokenizer, "encode"):
            return tokenizer
        get = getattr(llm, "get_tokenizer", None)
        if get is not None and not inspect.iscoroutinefunction(get):
            return get()
    return None


def max_context(engine: Any) -> int | None:
    """The model's context in tokens: what the engine declares (`max_context_tokens`),
    vLLM's max_model_len, or the tokenizer's model_max_length; None if none is known."""
    for owner in (engine, getattr(engine, "base", None)):
        if owner is None:
            continue
        declared = getattr(owner, "max_context_tokens", None)
        if isinstance(declared, int):
            return declared
        length = _vllm_context(owner) or _tokenizer_context(owner)
        if length is not None:
            return length
    return None


def _vllm_context(owner: Any) -> int | None:
    llm = getattr(owner, "llm", None)  # AsyncLLM has model_config, LLM its llm_engine's
    model_config = getattr(llm, "model_config", None) or getattr(
        getattr(llm, "llm_engine", None), "model_config", None
    )
    length = getattr(model_config, "max_model_len", None)
    return length if isinstance(length, int) else None


def _tokenizer_context(owner: Any) -> int | None:
    # not the model config's max_position_embeddings: transformers does not enforce it
    # (rotary models run past it), and the builtin tiny models set it below their prompts
    tokenizer = find_tokenizer(owner)
    length = getattr(tokenizer, "model_max_length", None)
    if isinstance(length, int) and 0 < length < _UNKNOWN_CONTEXT:
        return length
    return None
