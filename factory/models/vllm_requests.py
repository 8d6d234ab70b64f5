"""One ChatRequest in vLLM's terms: its conversation, its sampling parameters, its reply.

Checks here run before a request reaches vLLM, so a bad one fails alone with a clear
ValueError instead of an opaque error from vLLM's engine process.
"""

from __future__ import annotations

from typing import Any

from vllm import SamplingParams
from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

from factory.models.engine import ChatRequest, Completion, GenerationParams
from factory.models.images import decode_image

# vLLM sends the seed to its engine process as a 64-bit integer and takes -1 as "no seed",
# so only seeds in this range reproduce what they promise.
_SEEDS = range(0, 2**63)


class PromptTooLong(ValueError):
    """The rendered prompt does not fit the engine's max_model_len (nothing was generated)."""


class RequestsFailed(Exception):
    """Some requests of a batch failed; the others completed.

    `completions` holds a Completion per request, None where it failed; `errors` maps each
    failed position to its own exception. A batch of one raises that exception instead.
    """

    def __init__(self, completions: list[Completion | None], errors: dict[int, BaseException]):
        self.completions = completions
        self.errors = errors
        first = min(errors)
        super().__init__(
            f"{len(errors)} of {len(completions)} requests failed (positions "
            f"{sorted(errors)}); request {first}: {type(errors[first]).__name__}: "
            f"{errors[first]}"
        )


def sampling_params(
    params: GenerationParams,
    json_schema: dict[str, Any] | None = None,
    output_kind: RequestOutputKind = RequestOutputKind.FINAL_ONLY,
) -> SamplingParams:
    """temperature 0 is greedy in vLLM too; a seed makes each sampled request reproducible.

    A JSON schema constrains decoding through vLLM's structured outputs.
    """
    structured = StructuredOutputsParams(json=json_schema) if json_schema is not None else None
    common: dict[str, Any] = {
        "max_tokens": params.max_new_tokens,
        "structured_outputs": structured,
        "output_kind": output_kind,
    }
    if params.temperature == 0:
        return SamplingParams(temperature=0.0, **common)
    if params.seed not in _SEEDS:
        raise ValueError(
            f"seed {params.seed} is out of range: vLLM takes seeds from 0 to 2**63 - 1"
        )
    return SamplingParams(
        temperature=params.temperature, top_p=params.top_p, seed=params.seed, **common
    )


def conversation(request: ChatRequest, max_image_side: int) -> list[dict[str, Any]]:
    """The request as chat messages; an image goes in decoded and downscaled as PIL."""
    content: str | list[dict[str, Any]] = request.prompt
    if request.image is not None:
        image = decode_image(request.image, max_image_side)
        content = [
            {"type": "image_pil", "image_pil": image},
            {"type": "text", "text": request.prompt},
        ]
    messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
    if request.system:
        messages.insert(0, {"role": "system", "content": request.system})
    return messages


def completion(output: Any) -> Completion:
    """A finished vllm RequestOutput as the factory's Completion (text stripped)."""
    choice = output.outputs[0]
    return Completion(
        text=choice.text.strip(),
        finish_reason="length" if choice.finish_reason == "length" else "stop",
        prompt_tokens=len(output.prompt_token_ids or ()),
        completion_tokens=len(choice.token_ids),
    )
