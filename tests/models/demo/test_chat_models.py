"""The tiny offline LLaVA and Llama: complete, deterministic HF model directories."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)

from factory.models.demo import chat_models as demo_chat
from factory.models.weights import RANDOM_WEIGHTS_NOTE, builtin_note, resolve_model_path
from tests.models.demo.saved_weights import differing, weights


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return demo_chat.build_tiny_llava(str(tmp_path_factory.mktemp("tiny") / "model"))


def test_build_writes_a_loadable_model_dir(tiny_dir):
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir, use_safetensors=True)
    assert model.config.model_type == "llava"
    assert model.config.text_config.head_dim == 64
    assert model.config.text_config.num_attention_heads == 2
    assert model.config.vision_config.image_size == demo_chat.IMAGE_SIZE
    assert model.config.vision_config.patch_size == demo_chat.PATCH_SIZE
    parameters = sum(p.numel() for p in model.parameters())
    assert parameters < 2_000_000  # tiny enough to build in every test module


def test_weights_round_trip_bit_exact(tiny_dir, tmp_path):
    # transformers 5 saves LLaVA under the original checkpoint's key names
    # ("language_model.model.layers...") and renames them on load, so compare a reload
    # with the in-memory model, and a re-save with the first file.
    model = AutoModelForImageTextToText.from_pretrained(tiny_dir, use_safetensors=True)
    model.save_pretrained(tmp_path / "again")
    assert differing(weights(tiny_dir), weights(str(tmp_path / "again"))) == []
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "again")
    assert differing(model.state_dict(), reloaded.state_dict()) == []


def test_processor_expands_one_image_to_one_token_per_patch(tiny_dir):
    processor = AutoProcessor.from_pretrained(tiny_dir)
    image = Image.new("RGB", (120, 70), (200, 30, 30))
    inputs = processor(text=["<image>\nDescribe the vase."], images=[image], return_tensors="pt")
    image_token_id = processor.tokenizer.convert_tokens_to_ids(demo_chat.IMAGE)
    assert int((inputs["input_ids"] == image_token_id).sum()) == demo_chat.IMAGE_TOKENS
    assert tuple(inputs["pixel_values"].shape) == (1, 3, demo_chat.IMAGE_SIZE, demo_chat.IMAGE_SIZE)


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
        demo_chat.PAD,
        demo_chat.BOS,
        demo_chat.EOS,
    )
    assert tokenizer.tokenize(f"x {demo_chat.IMAGE} y").count(demo_chat.IMAGE) == 1


def test_same_seed_same_model(tiny_dir, tmp_path):
    again = demo_chat.build_tiny_llava(str(tmp_path / "again"), seed=0)
    assert differing(weights(tiny_dir), weights(again)) == []
    tokenizer_json = (Path(tiny_dir) / "tokenizer.json").read_bytes()
    assert (Path(again) / "tokenizer.json").read_bytes() == tokenizer_json


def test_other_seed_other_weights(tiny_dir, tmp_path):
    other = weights(demo_chat.build_tiny_llava(str(tmp_path / "other"), seed=1))
    first = weights(tiny_dir)
    query_weights = [name for name in first if name.endswith("q_proj.weight")]
    assert query_weights
    for name in query_weights:
        assert not torch.equal(first[name], other[name]), name


def test_building_leaves_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    demo_chat.build_tiny_llava(str(tmp_path / "model"), seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_ensure_builds_once(tmp_path):
    target = tmp_path / "cache" / "tiny"
    assert demo_chat.ensure_tiny_llava(str(target)) == str(target)
    weights = target / "model.safetensors"
    first_build = weights.stat().st_mtime_ns
    assert demo_chat.ensure_tiny_llava(str(target)) == str(target)
    assert weights.stat().st_mtime_ns == first_build


def test_concurrent_ensure_leaves_one_complete_dir(tmp_path):
    target = tmp_path / "tiny"
    results: list[str] = []
    errors: list[BaseException] = []

    def ensure() -> None:
        try:
            results.append(demo_chat.ensure_tiny_llava(str(target)))
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


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> str:
    return demo_chat.build_tiny_llama(str(tmp_path_factory.mktemp("tiny") / "llama"))


def test_tiny_llama_is_a_text_only_causal_lm_vllm_cpu_accepts(llama_dir):
    model = AutoModelForCausalLM.from_pretrained(llama_dir, use_safetensors=True)
    assert type(model).__name__ == "LlamaForCausalLM"
    config = model.config
    assert (config.hidden_size, config.num_attention_heads, config.head_dim) == (128, 2, 64)
    assert config.num_hidden_layers == 2
    assert sorted(path.name for path in Path(llama_dir).glob("*.safetensors")) == [
        "model.safetensors"
    ]
    assert not list(Path(llama_dir).glob("*.bin"))


def test_tiny_llama_shares_the_tiny_llava_tokenizer(llama_dir, tiny_dir):
    llama = AutoTokenizer.from_pretrained(llama_dir)
    llava = AutoProcessor.from_pretrained(tiny_dir).tokenizer
    assert llama.get_vocab() == llava.get_vocab()
    text = "A crimson vase of clay, ünïcode in the foreground."
    assert llama(text)["input_ids"] == llava(text)["input_ids"]


def test_tiny_llama_chat_template_takes_plain_string_messages(llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    conversation = [
        {"role": "system", "content": "Be plain."},
        {"role": "user", "content": "What?"},
    ]
    prompt = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert prompt == "<s>SYSTEM: Be plain.\nUSER: What?\nASSISTANT:"


def test_tiny_llama_round_trips_and_generates_words(llama_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(llama_dir, use_safetensors=True)
    model.save_pretrained(tmp_path / "again")
    assert differing(weights(llama_dir), weights(str(tmp_path / "again"))) == []
    tokenizer = AutoTokenizer.from_pretrained(llama_dir)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Describe."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    output = model.generate(**inputs, max_new_tokens=10, do_sample=False)
    new_tokens = output[0, inputs["input_ids"].shape[1] :].tolist()
    assert len(new_tokens) == 10 or new_tokens[-1] == tokenizer.eos_token_id
    # silenced rows: never single bytes, <pad>, <s> or <image>
    silenced = {tokenizer.convert_tokens_to_ids(token) for token in demo_chat.SPECIAL_TOKENS[:2]}
    silenced.add(tokenizer.convert_tokens_to_ids(demo_chat.IMAGE))
    assert not silenced & set(new_tokens)
    assert tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def test_tiny_llama_is_deterministic_per_seed(llama_dir, tmp_path):
    same_seed = weights(demo_chat.build_tiny_llama(str(tmp_path / "a")))
    assert differing(weights(llama_dir), same_seed) == []
    other = weights(demo_chat.build_tiny_llama(str(tmp_path / "b"), seed=1))
    assert not torch.equal(
        weights(llama_dir)["model.layers.0.self_attn.q_proj.weight"],
        other["model.layers.0.self_attn.q_proj.weight"],
    )


def test_tiny_llama_is_a_builtin_with_the_random_weight_note(tmp_path):
    directory = resolve_model_path("builtin://tiny-llama", str(tmp_path))
    assert Path(directory).parent == tmp_path / "builtin"
    assert AutoConfig.from_pretrained(directory).model_type == "llama"
    assert builtin_note("builtin://tiny-llama") == RANDOM_WEIGHTS_NOTE
    assert builtin_note("builtin://tiny-llava") == RANDOM_WEIGHTS_NOTE
