"""One kind of model call, shared by every text-generating stage.

A `ChatStep` names an engine, a prompt template and decoding settings; `PromptedEngine`
loads it once per actor, renders prompts, generates in one batch and knows the lineage its
texts carry. Steps of one actor with the same engine config share one loaded model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from factory.models.demo import DEMO_VLM
from factory.models.engine import (
    ChatRequest,
    Completion,
    EngineConfig,
    GenerationParams,
    complete_all,
)
from factory.prompts import load_prompt
from factory.stage_kit.contract import Resources
from factory.stage_kit.metrics import record_tokens

if TYPE_CHECKING:
    from factory.models.engine import Engine


# The loop's model stages by default: one actor each, a quarter CPU so the whole loop fits
# a small machine beside the other stages; GPU presets set num_gpus and wider pools.
LOOP_ACTOR = Resources(compute="actors", concurrency=1, batch_size=8, num_cpus=0.25)


class ChatStep(BaseModel):
    """Which engine answers, with which prompt template, decoded how."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None,
        description="a model named in the run's `models:` section: the step uses that "
        "model's engine and placement (its `engine` is filled in from there). None: the "
        "step's own `engine`, loaded in the stage",
    )
    adapter: str | None = Field(
        None,
        description="LoRA adapter (a name from the model's adapters) this step generates "
        "with; None: the base model",
    )
    engine: EngineConfig = Field(
        default_factory=lambda: EngineConfig(model=DEMO_VLM), description="the model and engine"
    )
    prompt: str = Field(..., description="prompt template: name (newest version) or name.vN")
    generation: GenerationParams = Field(default_factory=GenerationParams)


def chat_step(model: str, prompt: str, max_new_tokens: int) -> ChatStep:
    """A default step: `model` through the transformers engine on the CPU."""
    return ChatStep(
        engine=EngineConfig(model=model),
        prompt=prompt,
        generation=GenerationParams(max_new_tokens=max_new_tokens),
    )


# One loaded model per engine config per process: expand's answer step and the critic
# in one actor, or two styles of one stage, never load the same weights twice.
_LOADED: dict[str, Engine] = {}


def shared_engine(config: EngineConfig) -> Engine:
    from factory.models.engine_loader import load_engine

    key = config.model_dump_json()
    if key not in _LOADED:
        _LOADED[key] = load_engine(config)
    return _LOADED[key]


def adapter_revision(engine: EngineConfig, adapter: str | None) -> str | None:
    """Content hash of an adapter's weights for lineage; None for the base model, and for
    an OpenAI-compatible server, whose adapters are names it serves, not files here."""
    if adapter is None or engine.kind == "openai":
        return None
    from factory.models.weights import resolve_model_path, weights_revision

    return weights_revision(resolve_model_path(engine.adapters[adapter], engine.cache_dir))


class PromptedEngine:
    """A loaded engine plus its template: prompts in, texts out, lineage alongside."""

    def __init__(self, step: ChatStep):
        self.step = step
        self.template = load_prompt(step.prompt)
        self.engine = shared_engine(step.engine)
        info = self.engine.info
        self.lineage = {
            "model": info.model,
            "revision": info.revision,
            "engine": info.engine,
            "prompt_template": self.template.id,
            "prompt_sha256": self.template.sha256,
            "adapter": step.adapter,
            "adapter_revision": adapter_revision(step.engine, step.adapter),
        }

    def generate(self, calls: Sequence[tuple[dict[str, Any], bytes | None]]) -> list[str]:
        """One text per (template fields, image or None), in order, in one engine batch."""
        return [completion.text for completion in self.complete(calls)]

    def complete(
        self,
        calls: Sequence[tuple[dict[str, Any], bytes | None]],
        json_schema: dict[str, Any] | None = None,
    ) -> list[Completion]:
        """Like `generate`, with finish reasons; `json_schema` constrains every reply where
        the engine can (`Engine.constrains_json`)."""
        requests = [
            ChatRequest(
                prompt=self.template.render(**fields),
                image=image,
                adapter=self.step.adapter,
                json_schema=json_schema,
            )
            for fields, image in calls
        ]
        if not requests:
            return []
        before = getattr(self.engine, "generated_tokens", 0)
        completions = complete_all(self.engine, requests, self.step.generation)
        # engines that count what they generate expose a running total
        tokens = getattr(self.engine, "generated_tokens", 0) - before
        record_tokens(self.template.id, self.lineage["model"], tokens)
        return completions


def numbered(items: Sequence[str]) -> str:
    """Items as the numbered list the prompts show the model."""
    return "\n".join(f"{i}. {item}" for i, item in enumerate(items, start=1))
