"""PEFT adapters over the real tiny LLaVA: selection, isolation from the base, LRU eviction."""

from __future__ import annotations

import shutil

import pytest

from factory.models.demo.chat_models import build_tiny_llava
from factory.models.engine import ChatRequest, EngineConfig, GenerationParams
from factory.models.peft_adapters import PeftAdapterEngine
from tests.imagegen import jpeg
from tests.serve.adapters import make_lora_adapter

GREEDY = GenerationParams(max_new_tokens=10)
IMAGE = jpeg(64, 64, seed=3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("peft")
    base = build_tiny_llava(str(root / "base"))
    adapters = {
        name: make_lora_adapter(base, str(root / name), seed)
        for name, seed in (("red", 1), ("blue", 2), ("green", 3))
    }
    return base, adapters


@pytest.fixture
def engine(setup):
    base, adapters = setup
    return PeftAdapterEngine(EngineConfig(model=base), adapters, max_loaded=2)


def ask(adapter: str | None) -> ChatRequest:
    return ChatRequest("Describe the painting.", IMAGE, adapter=adapter)


def test_adapters_change_the_output_and_the_base_stays_the_base(engine):
    base_before = engine.generate([ask(None)], GREEDY)
    red, blue = engine.generate([ask("red"), ask("blue")], GREEDY)
    assert len({base_before[0], red, blue}) == 3
    # after adapters were loaded and used, base requests are still unadapted
    assert engine.generate([ask(None)], GREEDY) == base_before
    # a mixed batch gives each request its own model, in request order
    mixed = engine.generate([ask("blue"), ask(None), ask("red")], GREEDY)
    assert mixed == [blue, base_before[0], red]


def test_least_recently_used_adapter_is_evicted(engine):
    first_red = engine.generate([ask("red")], GREEDY)
    engine.load("blue")
    engine.load("red")  # red is now the most recent
    engine.load("green")  # over max_loaded=2: blue leaves
    assert list(engine.loaded) == ["red", "green"]
    assert set(engine.base.model.peft_config) == {"red", "green"}
    # an evicted adapter comes back on demand and gives the same text as before
    assert engine.generate([ask("blue")], GREEDY) != first_red
    assert "blue" in engine.loaded and len(engine.loaded) == 2
    assert engine.generate([ask("red")], GREEDY) == first_red


def test_revision_is_the_adapter_weights_hash(engine):
    revision = engine.load("red")
    assert len(revision) == 12 and engine.revision("red") == revision
    assert engine.load("blue") != revision


def test_unknown_adapter_and_pickled_adapters_are_refused(setup, tmp_path):
    base, adapters = setup
    pickled = tmp_path / "pickled"
    shutil.copytree(adapters["red"], pickled)
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    engine = PeftAdapterEngine(EngineConfig(model=base), {"pickled": str(pickled)}, 2)
    with pytest.raises(ValueError, match="unknown adapter 'red'"):
        engine.generate([ask("red")], GREEDY)
    with pytest.raises(ValueError, match="adapter_model.safetensors"):
        engine.load("pickled")
    assert engine.loaded == {}
