"""What /v1/caption and /v1/qa do with a checked image: prompts in, parsed answers out.

The prompts, parsers and critic-loop helpers are the batch pipeline's own (caption styles,
knowledge block, decompose / critic / rewrite and their reply parsers), so the API and a
batch run write the same kind of text with the same lineage. `generate` is the one way
out to a model: (served model name, requests, decoding) -> Generated.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from factory.models.engine import ChatRequest, GenerationParams
from factory.prompts import PromptTemplate, load_prompt
from factory.prompts.fusion import auxiliary_block
from factory.prompts.knowledge import knowledge_block
from factory.serve.api_errors import ApiError
from factory.serve.model_deployment import Generated
from factory.serve.serve_config import ServeConfig
from factory.text.fact_checks import check, critic_score, needs_rewrite, verdict_lines
from factory.text.parse import ParseError, clean_caption, normalise_answer, parse_facts

Generate = Callable[[str, list[ChatRequest], GenerationParams], Awaitable[Generated]]


def lineage(served_as: str, generated: Generated, template: PromptTemplate) -> dict[str, Any]:
    """What made a text: the batch pipeline's lineage fields plus the adapter."""
    return {
        "model": served_as,
        "base_model": generated.model,
        "revision": generated.revision,
        "adapter": generated.adapter,
        "adapter_revision": generated.adapter_revision,
        "engine": generated.engine,
        "prompt_template": template.id,
        "prompt_sha256": template.sha256,
    }


class Tasks:
    def __init__(self, config: ServeConfig, generate: Generate):
        self.config, self.generate = config, generate
        self.styles = {style: load_prompt(name) for style, name in config.styles.items()}
        self.answer_template = load_prompt(config.qa_prompt)
        loop = config.critic
        self.decompose = load_prompt(loop.decompose_prompt)
        self.judge = load_prompt(loop.critic_prompt)
        self.rewrite = load_prompt(loop.rewrite_prompt)
        self.loop_model = loop.model or config.model_name
        self.loop_params = GenerationParams(max_new_tokens=loop.max_new_tokens)

    def check_style(self, style: str) -> PromptTemplate:
        if style not in self.styles:
            raise ApiError(
                422,
                "unsupported_style",
                f"style {style!r} is not served; use one of {sorted(self.styles)}",
                "style",
            )
        return self.styles[style]

    async def caption(
        self,
        model: str,
        image: bytes,
        style: str,
        catalogue: dict[str, str],
        critic: bool,
        params: GenerationParams,
    ) -> dict[str, Any]:
        template = self.check_style(style)
        withheld = style in self.config.withhold_catalogue
        knowledge = None if withheld else knowledge_block(catalogue, name_identities=True)
        prompt = template.render(auxiliary=auxiliary_block({"knowledge": knowledge}))
        generated = await self.generate(model, [ChatRequest(prompt, image)], params)
        caption = _parsed(clean_caption, generated.texts[0], "caption")
        answer = {
            "caption": caption,
            "style": style,
            "model": model,
            "lineage": lineage(model, generated, template),
        }
        if critic:
            answer["critic"] = await self.critique(image, caption)
        return answer

    async def answer(
        self, model: str, image: bytes, question: str, params: GenerationParams
    ) -> dict[str, Any]:
        prompt = self.answer_template.render(question=question)
        generated = await self.generate(model, [ChatRequest(prompt, image)], params)
        text = generated.texts[0].strip()
        if not text:
            raise ApiError(502, "empty_model_reply", "the model replied with no answer")
        return {
            "question": question,
            "answer": normalise_answer(text),
            "model": model,
            "lineage": lineage(model, generated, self.answer_template),
        }

    async def critique(self, image: bytes, caption: str) -> dict[str, Any]:
        """Atomic facts, a verdict per fact against the image, and the rewritten caption.

        A reply the loop cannot parse ends it with status "failed" and the parser's reason:
        the caption itself is still good to return.
        """
        prompt = self.decompose.render(caption=caption)
        facts_reply = await self.generate(self.loop_model, [ChatRequest(prompt)], self.loop_params)
        try:
            facts = parse_facts(facts_reply.texts[0])[: self.config.critic.max_facts]
        except ParseError as error:
            return _failed(f"facts_{error.reason}", error.detail)
        prompts = [self.judge.render(fact=fact, caption=caption) for fact in facts]
        requests = [ChatRequest(prompt, image) for prompt in prompts]
        verdicts = await self.generate(self.loop_model, requests, self.loop_params)
        checks = [check(fact, text) for fact, text in zip(facts, verdicts.texts, strict=True)]
        score = critic_score(checks)
        if score is None:
            return _failed("no_verdicts", checks[0]["reason"], facts, checks)
        result = {
            "status": "ok",
            "facts": facts,
            "fact_checks": checks,
            "critic_score": score,
            "final_caption": caption,
            "rewritten": False,
            "lineage": lineage(self.loop_model, verdicts, self.judge),
        }
        if needs_rewrite(checks):
            prompt = self.rewrite.render(caption=caption, verdicts=verdict_lines(checks))
            rewritten = await self.generate(
                self.loop_model, [ChatRequest(prompt)], self.loop_params
            )
            try:
                result["final_caption"] = clean_caption(rewritten.texts[0])
            except ParseError as error:
                return _failed(f"rewrite_{error.reason}", error.detail, facts, checks)
            result["rewritten"] = True
        return result


def _parsed(parse: Callable[[str], str], text: str, what: str) -> str:
    try:
        return parse(text)
    except ParseError as error:
        raise ApiError(
            502, f"unusable_model_reply_{error.reason}", f"the model's {what}: {error.detail}"
        ) from None


def _failed(
    reason: str, detail: str | None, facts: list[str] | None = None, checks: list | None = None
) -> dict[str, Any]:
    return {
        "status": "failed",
        "reason": reason,
        "detail": detail,
        "facts": facts or [],
        "fact_checks": checks or [],
    }
