"""Structured outputs on the tiny offline models: parse failures before/after, grammar cost.

1. Parse failures per step (qa, questions, facts, verdict): the same requests answered
   "before" (the list-format prompts, v1, unconstrained, read by the lenient parsers) and
   "after" (the JSON prompts, decoded under the step's schema, validated by its pydantic
   model). Budgets and limits are caption_ultra.yaml's.
2. Cost of constrained decoding on the transformers engine: tokens/s generating the same
   number of tokens with and without the grammar (a schema loose enough that neither side
   stops early). Target: at most 10 % slower. Each constrained run sits between two free
   ones and is compared with their mean; the median of those ratios is the figure, and
   the ratio of the two free runs around it shows the noise. The script also times the
   grammar's own work (the logits processor: matcher advance, mask fill, mask apply) in
   separate constrained runs after the timed ones (the timer's own calls would slow the
   runs it measures): its share of their time does not depend on how busy the machine was.

    .venv/bin/python -m benchmarks.structured_outputs [--rows 12] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from factory.models.engine import ChatRequest, EngineConfig, GenerationParams
from factory.models.json_grammar import JsonLogitsProcessor
from factory.models.transformers_engine import TransformersEngine
from factory.prompts import load_prompt
from factory.run_config import load_run_config
from factory.stage_kit.chat_step import numbered
from factory.text import schemas
from factory.text.parse import ParseError, parse_facts, parse_qa, parse_questions, parse_verdict
from tests import imagegen

CAPTION = "A red horse stands on the left of a green field under a blue sky, by a fence."


def steps(config: Any) -> list[dict[str, Any]]:
    """Each structured step: its model, prompt fields, budget, parser and reply model."""
    qa, expand, decompose, critic = config.qa, config.expand, config.decompose, config.critic
    categories, dimensions = tuple(qa.categories), tuple(expand.dimensions)
    return [
        {
            "step": "qa",
            "model": qa.step.engine.model,
            "image": True,
            "prompt": "qa",
            "fields": {"categories": ", ".join(categories)},
            "budget": qa.step.generation.max_new_tokens,
            "lenient": lambda text: parse_qa(text, categories),
            "reply": schemas.qa_reply(categories, qa.max_text_chars),
        },
        {
            "step": "questions",
            "model": expand.questions.engine.model,
            "image": False,
            "prompt": "expand_questions",
            "fields": {"caption": CAPTION, "dimensions": numbered(dimensions)},
            "budget": expand.questions.generation.max_new_tokens,
            "lenient": lambda text: parse_questions(text, dimensions),
            "reply": schemas.questions_reply(
                dimensions, expand.max_questions, expand.max_text_chars
            ),
        },
        {
            "step": "facts",
            "model": decompose.step.engine.model,
            "image": False,
            "prompt": "decompose",
            "fields": {"caption": CAPTION},
            "budget": decompose.step.generation.max_new_tokens,
            "lenient": parse_facts,
            "reply": schemas.facts_reply(decompose.max_facts, decompose.max_text_chars),
        },
        {
            "step": "verdict",
            "model": critic.step.engine.model,
            "image": True,
            "prompt": "critic",
            "fields": {"caption": CAPTION, "fact": "The horse is red."},
            "budget": critic.step.generation.max_new_tokens,
            "lenient": parse_verdict,
            "reply": schemas.verdict_reply(critic.max_text_chars),
        },
    ]


def failure_rate(texts: list[str], parse: Callable[[str], Any]) -> float:
    failed = 0
    for text in texts:
        try:
            parse(text)
        except (ParseError, ValueError):  # pydantic's ValidationError is a ValueError
            failed += 1
    return failed / len(texts)


def parse_failures(rows: int) -> None:
    config = load_run_config("jobs/configs/caption_ultra.yaml")
    engines: dict[str, TransformersEngine] = {}
    print(f"## parse failures per step ({rows} requests each, tiny random-weight models)")
    print("| step | before: v1 prompt, lenient | after: JSON schema, validated | truncated after |")
    print("|---|---|---|---|")
    for step in steps(config):
        engine = engines.setdefault(
            step["model"], TransformersEngine(EngineConfig(model=step["model"]))
        )
        images = [imagegen.jpeg(64, 48, i) if step["image"] else None for i in range(rows)]
        params = GenerationParams(max_new_tokens=step["budget"])
        old = load_prompt(f"{step['prompt']}.v1").render(**step["fields"])
        new = load_prompt(step["prompt"]).render(**step["fields"])
        schema = schemas.json_schema(step["reply"])
        # a row number in the prompt makes each request different
        before = engine.complete(
            [ChatRequest(f"{old}\n#{i}", image) for i, image in enumerate(images)], params
        )
        after = engine.complete(
            [
                ChatRequest(f"{new}\n#{i}", image, json_schema=schema)
                for i, image in enumerate(images)
            ],
            params,
        )
        lenient = failure_rate([c.text for c in before], step["lenient"])
        strict = failure_rate([c.text for c in after], step["reply"].model_validate_json)
        cut = sum(c.finish_reason == "length" for c in after) / rows
        print(f"| {step['step']} | {lenient:.0%} | {strict:.0%} | {cut:.0%} |")


def grammar_cost(repeats: int, batch: int, tokens: int) -> None:
    loose = {
        "type": "object",
        "properties": {
            "facts": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": 100_000},
                "minItems": 1,
            }
        },
        "required": ["facts"],
        "additionalProperties": False,
    }
    params = GenerationParams(max_new_tokens=tokens)
    print(f"\n## grammar cost: {tokens} new tokens x batch {batch}, {repeats} sandwiches")
    print(
        "| model | free tokens/s | constrained tokens/s | constrained / free (quartiles) "
        "| free / free, the noise (quartiles) | grammar share |"
    )
    print("|---|---|---|---|---|---|")
    for model, image in (
        ("builtin://tiny-llama", None),
        ("builtin://tiny-llava", imagegen.jpeg(64, 48, 0)),
    ):
        engine = TransformersEngine(EngineConfig(model=model))
        free = [ChatRequest(f"Describe object {i}.", image) for i in range(batch)]
        constrained = [ChatRequest(r.prompt, image, json_schema=loose) for r in free]
        engine.complete(constrained[:1], GenerationParams(max_new_tokens=4))  # compile, warm up
        rates: dict[str, list[float]] = {"before": [], "constrained": [], "after": []}
        for _ in range(repeats):
            # a constrained run between two free ones: the machine's speed drifts by more
            # than the grammar costs, and a sandwich cancels a drift that is steady over it
            for side, requests in (("before", free), ("constrained", constrained), ("after", free)):
                start = time.perf_counter()
                done = engine.complete(requests, params)
                seconds = time.perf_counter() - start
                assert all(c.finish_reason == "length" for c in done), "a side stopped early"
                rates[side].append(sum(c.completion_tokens for c in done) / seconds)
        frees = [(a + b) / 2 for a, b in zip(rates["before"], rates["after"], strict=True)]
        ratio = [c / f for c, f in zip(rates["constrained"], frees, strict=True)]
        noise = [a / b for a, b in zip(rates["after"], rates["before"], strict=True)]
        share = _grammar_share(engine, constrained, params, max(2, repeats // 4))
        print(
            f"| {model} | {statistics.median(frees):.0f} "
            f"| {statistics.median(rates['constrained']):.0f} | {_quartiles(ratio)} "
            f"| {_quartiles(noise)} | {share:.1%} |"
        )


def _quartiles(values: list[float]) -> str:
    low, median, high = statistics.quantiles(values, n=4)
    return f"{median:.2f}x ({low:.2f}-{high:.2f})"


def _grammar_share(
    engine: TransformersEngine, requests: list[ChatRequest], params: GenerationParams, runs: int
) -> float:
    """Median share of a constrained run's time spent inside the grammar's logits
    processor (the engine's own processor class, timed from outside)."""
    spent: list[float] = []
    untimed = JsonLogitsProcessor.__call__

    def timed(self: JsonLogitsProcessor, input_ids: Any, scores: Any) -> Any:
        start = time.perf_counter()
        result = untimed(self, input_ids, scores)
        spent.append(time.perf_counter() - start)
        return result

    shares: list[float] = []
    JsonLogitsProcessor.__call__ = timed  # type: ignore[method-assign]
    try:
        for _ in range(runs):
            spent.clear()
            start = time.perf_counter()
            engine.complete(requests, params)
            shares.append(sum(spent) / (time.perf_counter() - start))
    finally:
        JsonLogitsProcessor.__call__ = untimed  # type: ignore[method-assign]
    return statistics.median(shares)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=20, help="sandwiches per model")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--cost-only", action="store_true", help="skip the parse failures")
    args = parser.parse_args()
    if not args.cost_only:
        parse_failures(args.rows)
    grammar_cost(args.repeats, args.batch, args.tokens)


if __name__ == "__main__":
    main()
