"""TransformersEngine on the tiny offline LLaVA, plus the engine config and dispatch."""

from __future__ import annotations

import io
import re
from types import SimpleNamespace

import pydantic
import pytest
import torch
from PIL import Image

from factory.models import loading, transformers_engine
from factory.models.engine import (
    ChatRequest,
    EngineConfig,
    EngineInfo,
    GenerationParams,
    load_engine,
)
from factory.models.loading import resolve_dtype
from factory.models.tiny import build_tiny_llava
from factory.models.transformers_engine import TransformersEngine, decode_image
from factory.models.weights import weights_revision

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

    # the processor loads in the shared loader, the model class is the engine's choice
    for module, name in (
        (loading, "AutoProcessor"),
        (transformers_engine, "AutoModelForImageTextToText"),
    ):
        monkeypatch.setattr(module, name, recording(getattr(module, name)))
    TransformersEngine(EngineConfig(model=tiny_dir))
    assert seen == [False, False]


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
