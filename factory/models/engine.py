"""The chat-generation protocol every engine implements, and the config that picks one.

Light on purpose: stages and configs import this module on the driver, so it must not pull
torch, transformers or vllm. `load_engine` imports the chosen implementation only when an
actor actually builds one.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

# kind -> "module:Class"; a new engine is one line here plus its own module.
ENGINE_IMPLEMENTATIONS: dict[str, str] = {
    "transformers": "factory.models.transformers_engine:TransformersEngine",
}

EngineKind = Literal["transformers"]


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


class EngineConfig(ModelSource):
    """Which model to load, from where, and on which device."""

    kind: EngineKind = Field(
        "transformers",
        description="engine implementation: transformers (CPU/GPU, any HF image-text-to-text "
        "model)",
    )
    model: str = Field(
        ...,
        description="model weights: a local directory, an s3://bucket/prefix (copied once per "
        "node into cache_dir) or builtin://tiny-llava (random-weight demo model)",
    )
    revision: str | None = Field(
        None,
        description="revision recorded in lineage; None: a content hash of the weights",
    )
    max_image_side: int = Field(
        448, ge=1, description="images are downscaled to fit this many pixels per side"
    )


@dataclass(frozen=True)
class ChatRequest:
    """One prompt, optionally about one image (encoded JPEG/PNG bytes)."""

    prompt: str
    image: bytes | None = None
    system: str | None = None


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
    """Chat-style generation over a batch of requests."""

    info: EngineInfo

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams) -> list[str]:
        """One output string per request, in request order."""
        ...


def load_engine(config: EngineConfig) -> Engine:
    """Build the engine `config.kind` names; its heavy imports happen here, not at import."""
    target = ENGINE_IMPLEMENTATIONS.get(config.kind)
    if target is None:
        raise ValueError(
            f"unknown engine kind {config.kind!r}; known: {sorted(ENGINE_IMPLEMENTATIONS)}"
        )
    module_name, class_name = target.split(":")
    engine_class = getattr(importlib.import_module(module_name), class_name)
    return engine_class(config)
