"""TransformersEngine on the tiny offline LLaVA and tiny Llama, plus config and dispatch."""

from __future__ import annotations

import io
import re
import shutil
import threading
from types import SimpleNamespace
from typing import Annotated

import pydantic
import pytest
import torch
from PIL import Image

from factory.models import loading, transformers_engine
from factory.models.demo.chat_models import build_tiny_llama, build_tiny_llava
from factory.models.engine import (
    ChatRequest,
    EngineConfig,
    EngineInfo,
    GenerationParams,
)
from factory.models.engine_loader import load_engine
from factory.models.images import decode_image
from factory.models.loading import resolve_dtype
from factory.models.transformers_engine import TransformersEngine
from factory.models.weights import weights_revision
from factory.text import schemas
from factory.text.labels import QA_CATEGORIES, QUESTION_DIMENSIONS

GREEDY = GenerationParams(max_new_tokens=8)


def _encoded(size: tuple[int, int], image_format: str = "JPEG", mode: str = "RGB") -> bytes:
    colour = {"RGB": (180, 60, 20), "L": 90, "RGBA": (20, 60, 180, 0)}[mode]
    buffer = io.BytesIO()
    Image.new(mode, size, colour).save(buffer, image_format)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return build_tiny_llava(str(tmp_path_factory.mktemp("tiny") / "model"))


@pytest.fixture(scope="module")
def engine(tiny_dir) -> TransformersEngine:
    return TransformersEngine(EngineConfig(model=tiny_dir))


@pytest.fixture(scope="module")
def image_requests() -> list[ChatRequest]:
    return [
        ChatRequest("Describe the painting.", _encoded((20, 20))),
        ChatRequest("Describe the scroll.", _encoded((640, 480), "PNG")),
        ChatRequest("What colours?", _encoded((33, 700), "JPEG", "L"), system="Be plain."),
        ChatRequest("Describe the coin.", _encoded((300, 200), "PNG", "RGBA")),
    ]


def test_one_nonempty_string_per_image_request(engine, image_requests):
    texts = engine.generate(image_requests, GREEDY)
    assert len(texts) == len(image_requests)
    assert all(isinstance(text, str) and text for text in texts)


def test_text_only_requests(engine):
    requests = [ChatRequest("Name a colour."), ChatRequest("Hello.", system="Be plain.")]
    texts = engine.generate(requests, GREEDY)
    assert len(texts) == 2
    assert all(texts)


def test_batch_keeps_request_order(engine, image_requests):
    mixed = [*image_requests[:2], ChatRequest("No image here."), image_requests[2]]
    one_by_one = [engine.generate([request], GREEDY)[0] for request in mixed]
    assert engine.generate(mixed, GREEDY) == one_by_one


def test_empty_batch(engine):
    assert engine.generate([], GREEDY) == []


def test_greedy_is_deterministic(engine, image_requests):
    assert engine.generate(image_requests, GREEDY) == engine.generate(image_requests, GREEDY)


def test_sampling_is_reproducible_per_seed(engine, image_requests):
    params = GenerationParams(max_new_tokens=8, temperature=1.0, seed=3)
    first = engine.generate(image_requests, params)
    assert engine.generate(image_requests, params) == first
    torch.manual_seed(0)
    expected_next = torch.rand(2)
    torch.manual_seed(0)
    engine.generate(image_requests[:1], params)
    assert torch.equal(torch.rand(2), expected_next)  # the caller's RNG stream is untouched


def test_info_fields(engine, tiny_dir):
    assert engine.info == EngineInfo(
        engine="transformers", model=tiny_dir, revision=weights_revision(tiny_dir)
    )
    assert re.fullmatch(r"[0-9a-f]{12}", engine.info.revision)


def test_pinned_revision_is_recorded(tiny_dir):
    pinned = TransformersEngine(EngineConfig(model=tiny_dir, revision="v1.2"))
    assert pinned.info.revision == "v1.2"


def test_trust_remote_code_stays_false_by_default(tiny_dir, monkeypatch):
    assert EngineConfig(model=tiny_dir).trust_remote_code is False
    seen: list[bool] = []

    def recording(auto_class):
        def from_pretrained(*args, **kwargs):
            seen.append(kwargs["trust_remote_code"])
            return auto_class.from_pretrained(*args, **kwargs)

        return SimpleNamespace(from_pretrained=from_pretrained)

    # config and processor load in the shared loader, the model class is the engine's choice
    for module, name in (
        (loading, "AutoConfig"),
        (loading, "AutoProcessor"),
        (transformers_engine, "AutoModelForImageTextToText"),
    ):
        monkeypatch.setattr(module, name, recording(getattr(module, name)))
    TransformersEngine(EngineConfig(model=tiny_dir))
    assert seen == [False, False, False]
    seen.clear()
    TransformersEngine(EngineConfig(model=tiny_dir, trust_remote_code=True))
    assert seen == [True, True, True]


def test_adapters_are_refused_with_a_clear_error(tiny_dir):
    engine = TransformersEngine(EngineConfig(model=tiny_dir, adapters={"style": "/a/style"}))
    with pytest.raises(ValueError, match="does not apply LoRA adapters"):
        engine.generate([ChatRequest("Hi.", adapter="style")], GREEDY)
    with pytest.raises(ValueError, match="unknown adapter 'other'"):
        engine.generate([ChatRequest("Hi.", adapter="other")], GREEDY)
    assert engine.generate([ChatRequest("Hi.")], GREEDY)  # base requests still work


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> str:
    return build_tiny_llama(str(tmp_path_factory.mktemp("tiny") / "llama"))


@pytest.fixture(scope="module")
def text_engine(llama_dir) -> TransformersEngine:
    return TransformersEngine(EngineConfig(model=llama_dir))


def test_text_only_llm_loads_as_a_causal_lm(text_engine, llama_dir):
    assert text_engine.accepts_images is False
    assert type(text_engine.model).__name__ == "LlamaForCausalLM"
    assert text_engine.info == EngineInfo(
        engine="transformers", model=llama_dir, revision=weights_revision(llama_dir)
    )


def test_text_only_llm_generates_in_request_order(text_engine):
    requests = [
        ChatRequest("Describe the painting."),
        ChatRequest("Name a colour.", system="Be plain."),
        ChatRequest("Who made this vase?"),
    ]
    one_by_one = [text_engine.generate([request], GREEDY)[0] for request in requests]
    assert all(one_by_one)
    assert len(set(one_by_one)) > 1
    assert text_engine.generate(requests, GREEDY) == one_by_one
    assert text_engine.generate(requests, GREEDY) == one_by_one  # greedy is deterministic


def test_text_only_llm_uses_its_chat_template_with_the_system_message(text_engine):
    captured: list[str] = []
    real_generate = text_engine.model.generate

    def recording_generate(**kwargs):
        captured.extend(text_engine.tokenizer.batch_decode(kwargs["input_ids"]))
        return real_generate(**kwargs)

    text_engine.model.generate = recording_generate
    try:
        text_engine.generate([ChatRequest("What?", system="Be plain.")], GREEDY)
    finally:
        del text_engine.model.generate
    assert captured == ["<s>SYSTEM: Be plain.\nUSER: What?\nASSISTANT:"]


def test_an_image_sent_to_a_text_only_llm_fails_clearly(text_engine):
    request = ChatRequest("Describe.", _encoded((20, 20)))
    with pytest.raises(ValueError, match="text-only LLM and cannot take images"):
        text_engine.generate([ChatRequest("Hi."), request], GREEDY)


def test_a_model_without_chat_template_is_refused(llama_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(llama_dir, bare)
    (bare / "chat_template.jinja").unlink()
    with pytest.raises(ValueError, match="ships no chat template"):
        TransformersEngine(EngineConfig(model=str(bare)))


def test_load_engine_dispatches_on_kind(tiny_dir):
    loaded = load_engine(EngineConfig(model=tiny_dir))
    assert isinstance(loaded, TransformersEngine)
    assert loaded.generate([ChatRequest("Hi.")], GREEDY)


def test_config_rejects_unknown_fields_and_kinds():
    with pytest.raises(pydantic.ValidationError):
        EngineConfig(model="m", gpu=True)
    with pytest.raises(pydantic.ValidationError):
        EngineConfig(model="m", kind="onnx")
    with pytest.raises(pydantic.ValidationError):
        GenerationParams(top_k=5)


def test_auto_dtype_follows_the_configured_device():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cuda:0")) == torch.bfloat16
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16


def test_decode_image_fits_max_side_and_keeps_aspect():
    image = decode_image(_encoded((900, 300), "PNG", "L"), max_side=448)
    assert image.mode == "RGB"
    assert max(image.size) == 448
    assert image.size[1] == pytest.approx(448 / 3, abs=1)


def test_decode_image_never_upscales():
    assert decode_image(_encoded((40, 30)), max_side=448).size == (40, 30)


def test_decode_image_puts_transparency_on_white():
    image = decode_image(_encoded((10, 10), "PNG", "RGBA"), max_side=448)
    assert image.getpixel((5, 5)) == (255, 255, 255)


def test_decode_image_scales_16_bit_greys_instead_of_clipping():
    buffer = io.BytesIO()
    Image.new("I;16", (8, 8), 32768).save(buffer, "PNG")  # mid-grey in 16 bits
    red, green, blue = decode_image(buffer.getvalue(), max_side=448).getpixel((4, 4))
    assert red == green == blue
    assert red == pytest.approx(32768 / 257, abs=1)


# ---------------------------------------------------------------- structured outputs

# small limits keep the random-weight replies short (the models fill every field to its
# limit); the shapes are the loop's own
LOOP_REPLIES = {
    "qa": schemas.qa_reply(QA_CATEGORIES[:3], 12),
    "questions": schemas.questions_reply(QUESTION_DIMENSIONS, 2, 16),
    "facts": schemas.facts_reply(2, 16),
    "verdict": schemas.verdict_reply(16),
}
ROOMY = GenerationParams(max_new_tokens=400)


@pytest.mark.parametrize("name", sorted(LOOP_REPLIES))
def test_every_loop_schema_decodes_to_a_valid_reply_on_both_tiny_models(name, engine, text_engine):
    reply = LOOP_REPLIES[name]
    schema = schemas.json_schema(reply)
    for model, image in ((engine, _encoded((40, 30))), (text_engine, None)):
        assert model.constrains_json
        requests = [ChatRequest(f"Reply {n}.", image, json_schema=schema) for n in range(3)]
        for completion in model.complete(requests, ROOMY):
            # random weights, yet the grammar closes the JSON well inside the budget
            assert completion.finish_reason == "stop", completion
            assert completion.completion_tokens < ROOMY.max_new_tokens
            reply.model_validate_json(completion.text)


@pytest.mark.parametrize("limits", [(7, 7), (5, 9)], ids=["one limit", "two limits"])
def test_string_limits_hold_whether_the_grammar_or_the_counter_keeps_them(text_engine, limits):
    # one limit is kept by the counter beside the grammar, two by the grammar itself; the
    # random-weight model writes every string to its limit, so each must stop exactly there
    question, answer = (Annotated[str, pydantic.Field(max_length=n)] for n in limits)
    reply = pydantic.create_model("Pair", question=(question, ...), answer=(answer, ...))
    schema = schemas.json_schema(reply)
    requests = [ChatRequest(f"Pair {n}.", json_schema=schema) for n in range(4)]
    for completion in text_engine.complete(requests, ROOMY):
        pair = reply.model_validate_json(completion.text)
        assert (len(pair.question), len(pair.answer)) == limits, completion.text


def test_free_strings_held_back_from_the_matcher_give_the_same_replies(text_engine, monkeypatch):
    # inside a free string the processor keeps the row's mask and gives the matcher its
    # plain tokens as one string later; the greedy replies must not change by a token
    from factory.models import json_grammar

    schema = schemas.json_schema(schemas.qa_reply(QA_CATEGORIES[:2], 40))
    requests = [ChatRequest(f"Pair {n}.", json_schema=schema) for n in range(4)]
    releases = []
    release = json_grammar.JsonLogitsProcessor._release
    monkeypatch.setattr(
        json_grammar.JsonLogitsProcessor,
        "_release",
        lambda self, row: releases.append(len(self.held[row])) or release(self, row),
    )
    held_back = text_engine.complete(requests, ROOMY)
    assert sum(releases) > 0  # plain tokens were held back
    monkeypatch.setattr(text_engine._grammars._vocabulary, "free_mask", None)
    step_by_step = text_engine.complete(requests, ROOMY)
    assert [c.text for c in held_back] == [c.text for c in step_by_step]


def test_a_reply_cut_at_max_new_tokens_says_so(text_engine):
    schema = schemas.json_schema(LOOP_REPLIES["facts"])
    (cut,) = text_engine.complete([ChatRequest("Facts.", json_schema=schema)], GREEDY)
    assert (cut.finish_reason, cut.completion_tokens) == ("length", GREEDY.max_new_tokens)
    with pytest.raises(pydantic.ValidationError):
        LOOP_REPLIES["facts"].model_validate_json(cut.text)
    (whole,) = text_engine.complete([ChatRequest("Facts.", json_schema=schema)], ROOMY)
    assert whole.finish_reason == "stop" and whole.text.startswith(cut.text)
    assert whole.prompt_tokens == cut.prompt_tokens > 0


def test_mixed_schemas_in_one_batch_keep_request_order(text_engine):
    facts = schemas.json_schema(LOOP_REPLIES["facts"])
    verdict = schemas.json_schema(LOOP_REPLIES["verdict"])
    requests = [
        ChatRequest("One.", json_schema=facts),
        ChatRequest("Two."),
        ChatRequest("Three.", json_schema=verdict),
        ChatRequest("Four.", json_schema=facts),
    ]
    params = GenerationParams(max_new_tokens=120)
    one_by_one = [text_engine.complete([request], params)[0] for request in requests]
    assert text_engine.complete(requests, params) == one_by_one
    LOOP_REPLIES["verdict"].model_validate_json(one_by_one[2].text)


def test_should_stop_ends_the_batch_at_the_next_token(text_engine):
    requests = [ChatRequest("Go on."), ChatRequest("And on.")]
    stopped = text_engine.complete(requests, ROOMY, should_stop=lambda: True)
    assert [c.completion_tokens for c in stopped] == [1, 1]


def test_stream_yields_the_reply_piece_by_piece_then_the_completion(text_engine):
    request = ChatRequest("Facts.", json_schema=schemas.json_schema(LOOP_REPLIES["facts"]))
    chunks = list(text_engine.stream(request, ROOMY))
    (whole,) = text_engine.complete([request], ROOMY)
    assert len(chunks) > 2 and chunks[-1].completion == whole
    assert all(chunk.completion is None for chunk in chunks[:-1])
    assert "".join(chunk.text for chunk in chunks).strip() == whole.text


def test_closing_a_stream_stops_its_generation(text_engine):
    stream = text_engine.stream(ChatRequest("Go on and on."), GenerationParams(max_new_tokens=5000))
    assert next(stream).text
    stream.close()  # returns once the generating thread has ended
    assert not [t for t in threading.enumerate() if t.name == "transformers-stream"]
    assert text_engine.complete([ChatRequest("Still here.")], GREEDY)[0].text
