"""A scripted stand-in for a model, for tests about the stages around the engine.

Plugged in as `engine.kind: tests.scripted_engine:ScriptedEngine`; `engine.model` names
the role it plays. Replies are computed from the prompt the way a well-behaved model
would answer, in the messy formats real models use, so the stages' parsing is exercised.
Tests about the engines themselves use the real engines.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from factory.models.engine import (
    ChatRequest,
    Completion,
    EngineConfig,
    EngineInfo,
    GenerationParams,
)

CAPTION = "A red horse stands on the left of a green field under a blue sky, beside a wooden fence."
FACTS = (
    "A horse is red.",
    "The horse stands on the left.",
    "The sky is blue.",
    "A wooden fence is beside the horse.",
)
REWRITTEN = "A red horse stands on the left of a green field."


def _critic(prompt: str) -> str:
    if FACTS[3] in prompt:
        return json.dumps(
            {
                "verdict": "inconsistent",
                "reason": "no fence is visible",
                "correction": "No fence is visible.",
            }
        )
    if FACTS[2] in prompt:
        return "Verdict: unverifiable\nReason: the top of the picture is cropped."
    return '```json\n{"verdict": "consistent", "reason": "clearly visible",}\n```'


def _qa(prompt: str) -> str:
    pairs = [
        {"category": "subject", "question": "What is shown?", "answer": "a red horse"},
        {"category": "creator", "question": "Who made it?", "answer": "Cannot tell."},
    ]
    return "Sure! Here are the pairs:\n" + json.dumps(pairs)


REPLIES = {
    "captioner": lambda prompt: f'Here is the caption:\n"{CAPTION}"',
    "leaky": lambda prompt: "The Harvesters by Pieter Bruegel shows wheat under a pale sky.",
    "looping": lambda prompt: "the horse " * 30,
    "asker": lambda prompt: (
        "Questions:\n1. [spatial layout] Where is the fence?\n"
        "2. (Visual style) Is it painted or drawn?\n3. **Scene and setting**: Is it day?"
    ),
    "answerer": lambda prompt: CAPTION + " It is daytime, painted in oils.",
    "decomposer": lambda prompt: "\n".join(f"{i}) {fact}" for i, fact in enumerate(FACTS, 1)),
    "critic": _critic,
    "all_consistent": lambda prompt: '{"verdict": "consistent", "reason": "visible"}',
    "mumbler": lambda prompt: "hmm, hard to say",
    "rewriter": lambda prompt: f"Rewritten caption: {REWRITTEN}",
    "qa": _qa,
    "silent": lambda prompt: "",
    # cut off at max_new_tokens (finish reason length), as a long reply is
    "cut": lambda prompt: '{"facts": ["A red horse stands on the le',
    # valid for the lenient parsers, but not JSON: wrong from an engine that constrains
    "strict_prose": lambda prompt: "1. A horse is red.\n2. The sky is blue.",
    # what a constraining engine returns under the facts schema
    "strict_facts": lambda prompt: json.dumps({"facts": list(FACTS[:2])}),
}
TRUNCATED = {"cut"}
CONSTRAINED = {"strict_prose", "strict_facts"}


class ScriptedEngine:
    def __init__(self, config: EngineConfig):
        if config.model not in REPLIES:
            raise ValueError(f"no script for role {config.model!r}; known: {sorted(REPLIES)}")
        self.reply = REPLIES[config.model]
        self.info = EngineInfo(engine="scripted", model=config.model, revision="script-1")
        self.prompts: list[str] = []
        self.schemas: list[dict | None] = []
        self.finish_reason = "length" if config.model in TRUNCATED else "stop"
        self.constrains_json = config.model in CONSTRAINED

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams) -> list[str]:
        return [completion.text for completion in self.complete(requests, params)]

    def complete(
        self, requests: Sequence[ChatRequest], params: GenerationParams
    ) -> list[Completion]:
        self.prompts.extend(request.prompt for request in requests)
        self.schemas.extend(request.json_schema for request in requests)
        return [Completion(self.reply(r.prompt), self.finish_reason) for r in requests]
