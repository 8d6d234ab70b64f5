"""The tiny offline BLIP: a complete, deterministic captioning directory with BERT's vocab."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    BlipForConditionalGeneration,
    BlipForQuestionAnswering,
)
from transformers.models.blip import BlipImageProcessorPil

from factory.models.demo import blip as demo_blip
from factory.models.weights import RANDOM_WEIGHTS_NOTE, builtin_note, resolve_model_path
from tests.models.demo.saved_weights import differing, weights


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory) -> str:
    return demo_blip.build_tiny_blip(str(tmp_path_factory.mktemp("tiny-blip") / "model"))


def _image() -> Image.Image:
    return Image.new("RGB", (90, 60), (200, 30, 30))


def test_build_writes_a_tiny_captioner(blip_dir):
    model = AutoModelForImageTextToText.from_pretrained(blip_dir, use_safetensors=True)
    assert isinstance(model, BlipForConditionalGeneration)
    assert model.config.text_config.vocab_size == demo_blip.VOCAB_SIZE == 30524
    assert model.config.vision_config.image_size == demo_blip.IMAGE_SIZE
    parameters = sum(p.numel() for p in model.parameters())
    assert 900_000 < parameters < 1_200_000  # the word embeddings dominate


def test_tokenizer_is_bert_uncased_plus_blip_tokens(blip_dir):
    tokenizer = AutoProcessor.from_pretrained(blip_dir).tokenizer
    assert len(tokenizer) == 30524
    assert tokenizer.convert_tokens_to_ids(["[PAD]", "[CLS]", "[SEP]"]) == [0, 101, 102]
    assert tokenizer.convert_tokens_to_ids([demo_blip.DEC, demo_blip.ENC]) == [30522, 30523]
    assert tokenizer.bos_token == demo_blip.DEC
    ids = tokenizer("A Crimson Vase")["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "a", "crimson", "vase", "[SEP]"]


def test_processor_uses_the_pil_image_processor(blip_dir):
    processor = AutoProcessor.from_pretrained(blip_dir)
    assert isinstance(processor.image_processor, BlipImageProcessorPil)
    inputs = processor(images=_image(), text="a picture of", return_tensors="pt")
    assert tuple(inputs["pixel_values"].shape) == (1, 3, 32, 32)
    assert "token_type_ids" not in inputs


def test_weights_and_processor_round_trip(blip_dir, tmp_path):
    model = BlipForConditionalGeneration.from_pretrained(blip_dir, use_safetensors=True)
    model.save_pretrained(tmp_path / "again")
    assert differing(weights(blip_dir), weights(str(tmp_path / "again"))) == []
    reloaded = BlipForConditionalGeneration.from_pretrained(tmp_path / "again")
    assert differing(model.state_dict(), reloaded.state_dict()) == []
    processor = AutoProcessor.from_pretrained(blip_dir)
    processor.save_pretrained(tmp_path / "again")
    again = AutoProcessor.from_pretrained(tmp_path / "again")
    text = "Two fish and a prawn, ünïcode too."
    assert again.tokenizer(text)["input_ids"] == processor.tokenizer(text)["input_ids"]
    assert again.image_processor.to_dict() == processor.image_processor.to_dict()


def test_generates_words_and_stops_at_sep(blip_dir):
    processor = AutoProcessor.from_pretrained(blip_dir)
    model = BlipForConditionalGeneration.from_pretrained(blip_dir).eval()
    inputs = processor(images=_image(), text="a picture of", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    text = processor.decode(output[0], skip_special_tokens=True)
    assert text.startswith("a picture of")
    generated = output[0, inputs["input_ids"].shape[1] - 1 :].tolist()
    # silenced specials never come out; only [SEP] may, to end the caption
    specials = set(processor.tokenizer.all_special_ids) - {processor.tokenizer.sep_token_id}
    assert not specials & set(generated)


def test_question_answering_loads_from_the_same_directory(blip_dir):
    processor = AutoProcessor.from_pretrained(blip_dir)
    model = BlipForQuestionAnswering.from_pretrained(blip_dir).eval()
    inputs = processor(images=_image(), text="what colour is it?", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert output[0, 0].item() == demo_blip.BERT_VOCAB_SIZE  # answers start at [DEC]
    assert 2 <= output.shape[1] <= 5


def test_same_seed_same_model_and_rng_untouched(blip_dir, tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    again = demo_blip.build_tiny_blip(str(tmp_path / "again"), seed=0)
    assert torch.equal(torch.rand(3), expected)
    assert differing(weights(blip_dir), weights(again)) == []


def test_builtin_uri_builds_once(tmp_path):
    directory = resolve_model_path("builtin://tiny-blip", cache_dir=str(tmp_path))
    assert Path(directory, "model.safetensors").is_file()
    assert resolve_model_path("builtin://tiny-blip", cache_dir=str(tmp_path)) == directory
    assert builtin_note("builtin://tiny-blip") == RANDOM_WEIGHTS_NOTE
