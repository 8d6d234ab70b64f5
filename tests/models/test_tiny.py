"""The tiny offline LLaVA: a complete, deterministic HF model directory."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from factory.models import tiny


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return tiny.build_tiny_llava(str(tmp_path_factory.mktemp("tiny") / "model"))


def _weights(model_dir: str) -> dict[str, torch.Tensor]:
    return load_file(str(Path(model_dir) / "model.safetensors"))


def _assert_same_tensors(left: dict[str, torch.Tensor], right: dict[str, torch.Tensor]) -> None:
    assert left.keys() == right.keys()
    for name, tensor in left.items():
        assert tensor.dtype == right[name].dtype, name
        assert torch.equal(tensor, right[name]), name


def test_build_writes_a_loadable_model_dir(tiny_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir, use_safetensors=True)
    assert model.config.model_type == "llava"
    assert model.config.text_config.head_dim == 64
    assert model.config.text_config.num_attention_heads == 2
    assert model.config.vision_config.image_size == tiny.IMAGE_SIZE
    assert model.config.vision_config.patch_size == tiny.PATCH_SIZE
    parameters = sum(p.numel() for p in model.parameters())
    assert parameters < 2_000_000  # tiny enough to build in every test module


def test_weights_round_trip_bit_exact(tiny_dir, tmp_path):
    # transformers 5 saves LLaVA under the original checkpoint's key names
    # ("language_model.model.layers...") and renames them on load, so compare a reload
    # with the in-memory model, and a re-save with the first file.
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir, use_safetensors=True)
    model.save_pretrained(tmp_path / "again")
    _assert_same_tensors(_weights(tiny_dir), _weights(str(tmp_path / "again")))
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "again")
    _assert_same_tensors(model.state_dict(), reloaded.state_dict())


def test_processor_expands_one_image_to_one_token_per_patch(tiny_dir):
    processor = AutoProcessor.from_pretrained(tiny_dir)
    image = Image.new("RGB", (120, 70), (200, 30, 30))
    inputs = processor(text=["<image>\nDescribe the vase."], images=[image], return_tensors="pt")
    image_token_id = processor.tokenizer.convert_tokens_to_ids(tiny.IMAGE)
    assert int((inputs["input_ids"] == image_token_id).sum()) == tiny.IMAGE_TOKENS
    assert tuple(inputs["pixel_values"].shape) == (1, 3, tiny.IMAGE_SIZE, tiny.IMAGE_SIZE)


def test_chat_template_places_image_before_prompt(tiny_dir):
    processor = AutoProcessor.from_pretrained(tiny_dir)
    conversation = [
        {"role": "system", "content": [{"type": "text", "text": "Be plain."}]},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
    ]
    prompt = processor.apply_chat_template(conversation, add_generation_prompt=True)
    assert prompt == "<s>SYSTEM: Be plain.\nUSER: <image>\nWhat?\nASSISTANT:"


def test_processor_save_load_round_trip(tiny_dir, tmp_path):
    processor = AutoProcessor.from_pretrained(tiny_dir)
    processor.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    text = "A crimson vase of clay, ünïcode and 漢字 in the foreground."
    ids = processor.tokenizer(text)["input_ids"]
    assert reloaded.tokenizer(text)["input_ids"] == ids
    assert reloaded.tokenizer.decode(ids) == text  # byte-level BPE: any text round-trips
    assert reloaded.image_processor.to_dict() == processor.image_processor.to_dict()
    assert reloaded.chat_template == processor.chat_template


def test_special_tokens(tiny_dir):
    tokenizer = AutoProcessor.from_pretrained(tiny_dir).tokenizer
    assert (tokenizer.pad_token, tokenizer.bos_token, tokenizer.eos_token) == (
        tiny.PAD,
        tiny.BOS,
        tiny.EOS,
    )
    assert tokenizer.tokenize(f"x {tiny.IMAGE} y").count(tiny.IMAGE) == 1


def test_same_seed_same_model(tiny_dir, tmp_path):
    again = tiny.build_tiny_llava(str(tmp_path / "again"), seed=0)
    _assert_same_tensors(_weights(tiny_dir), _weights(again))
    tokenizer_json = (Path(tiny_dir) / "tokenizer.json").read_bytes()
    assert (Path(again) / "tokenizer.json").read_bytes() == tokenizer_json


def test_other_seed_other_weights(tiny_dir, tmp_path):
    other = _weights(tiny.build_tiny_llava(str(tmp_path / "other"), seed=1))
    first = _weights(tiny_dir)
    query_weights = [name for name in first if name.endswith("q_proj.weight")]
    assert query_weights
    for name in query_weights:
        assert not torch.equal(first[name], other[name]), name


def test_building_leaves_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny.build_tiny_llava(str(tmp_path / "model"), seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_ensure_builds_once(tmp_path):
    target = tmp_path / "cache" / "tiny"
    assert tiny.ensure_tiny_llava(str(target)) == str(target)
    weights = target / "model.safetensors"
    first_build = weights.stat().st_mtime_ns
    assert tiny.ensure_tiny_llava(str(target)) == str(target)
    assert weights.stat().st_mtime_ns == first_build


def test_concurrent_ensure_leaves_one_complete_dir(tmp_path):
    target = tmp_path / "tiny"
    results: list[str] = []
    errors: list[BaseException] = []

    def ensure() -> None:
        try:
            results.append(tiny.ensure_tiny_llava(str(target)))
        except BaseException as error:  # re-raised below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=ensure) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert results == [str(target)] * 3
    assert [entry.name for entry in tmp_path.iterdir()] == ["tiny"]  # no staging leftovers
    AutoModelForImageTextToText.from_pretrained(str(target), use_safetensors=True)
