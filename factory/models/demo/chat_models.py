"""Tiny random-weight models built offline, for tests and demos on machines without a hub.

Tiny LLaVA: CLIP vision tower (32-px images, 8-px patches) + Llama text model (hidden 128,
2 heads of size 64 -- vLLM's CPU attention rejects smaller heads -- 2 layers), a byte-level
BPE tokenizer trained here on a built-in corpus, and a LlavaProcessor with a chat template.
Tiny Llama: the same text model and tokenizer alone, as a text-only chat LLM.
The directories load through AutoProcessor / AutoModelForImageTextToText (LLaVA) or
AutoTokenizer / AutoModelForCausalLM (Llama) like any hub checkpoint, so the engines under
test take the same code path as real weights.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.models.clip import CLIPImageProcessorPil

from factory.models.weights import build_once

IMAGE_SIZE = 32
PATCH_SIZE = 8
# "default" feature selection drops CLIP's CLS token, so one <image> token per patch.
IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
VOCAB_SIZE = 1024  # an upper bound: the built-in corpus yields about 760 tokens

PAD, BOS, EOS, IMAGE = "<pad>", "<s>", "</s>", "<image>"
SPECIAL_TOKENS = [PAD, BOS, EOS, IMAGE]  # ids 0..3, in this order

# LLaVA-1.5 style: "SYSTEM: ...\nUSER: <image>\nprompt\nASSISTANT:". Content may be a plain
# string or a list of image/text parts. Newlines are jinja expressions because HF renders
# templates with trim_blocks, which eats a literal newline after a block tag.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] | upper }}: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>{{ '\\n' }}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
# The tiny Llama's: the same layout for plain-string content only, as text-only LLMs' are.
# vLLM reads such a template as "string" content format and joins text parts for it.
TEXT_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ message['role'] | upper }}: {{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# Word lists as plain strings (split in _corpus) to keep the module short.
_COLOURS = (
    "red ochre umber sienna crimson scarlet vermilion gold silver bronze ivory black "
    "white grey blue ultramarine azure indigo green olive emerald teal yellow amber brown "
    "violet"
)
_OBJECTS = (
    "painting portrait landscape vase bowl coin statue sculpture mask tapestry manuscript "
    "print drawing woodcut fresco icon altarpiece helmet sword jar figure relief mosaic "
    "fan scroll map plate cup"
)
_MATERIALS = "oil tempera ink paper canvas panel marble clay wood glass silk stone"
_PLACES = "foreground background left right centre top bottom corner edge sky sea"
_SENTENCES = (
    "The museum keeps the object in a quiet gallery under soft light.",
    "A curator describes the scene from the foreground to the background.",
    "Waves rise over small boats while a mountain stands far behind them.",
    "Farmers cut the wheat in a wide field and rest under a tree at noon.",
    "Stars swirl above a sleeping village with a tall dark cypress.",
    "Two fish and a prawn lie on a branch beside a short poem in ink.",
    "Worn coins show a profile of a ruler and letters around the rim.",
    "A page of an old book shows constellations drawn as figures.",
    "Describe the image. What colours do you see? Who made this object?",
    "USER: describe this artwork. ASSISTANT: the image shows a scene.",
    "SYSTEM: you are a careful museum cataloguer who writes plain captions.",
)


def _corpus() -> list[str]:
    """A deterministic English corpus: hand-written lines plus every colour/object phrase."""
    phrases = [
        f"a {colour} {thing} of {material} in the {place}"
        for (colour, thing), material, place in zip(
            itertools.product(_COLOURS.split(), _OBJECTS.split()),
            itertools.cycle(_MATERIALS.split()),
            itertools.cycle(_PLACES.split()),
        )
    ]
    return list(_SENTENCES) + phrases


def train_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE trained on the built-in corpus: any text encodes, nothing downloads."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        extra_special_tokens={"image_token": IMAGE},
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _text_config(tokenizer: PreTrainedTokenizerFast) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def _model_config(tokenizer: PreTrainedTokenizerFast) -> LlavaConfig:
    vision = CLIPVisionConfig(
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        projection_dim=32,
    )
    return LlavaConfig(
        vision_config=vision,
        text_config=_text_config(tokenizer),
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE),
        image_seq_length=IMAGE_TOKENS,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )


def _silence_unlikely_tokens(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast) -> None:
    """Zero the output rows of single bytes and of special tokens other than EOS.

    A zero row gives logit 0 while the random rows spread around 0, so greedy decoding never
    picks them: the noise decodes to word pieces instead of broken UTF-8, and the model never
    emits <image> or <pad>, which a real captioner would not either.
    """
    byte_tokens = set(pre_tokenizers.ByteLevel.alphabet())
    silent = [
        token_id
        for token, token_id in tokenizer.get_vocab().items()
        if token in byte_tokens or (token in SPECIAL_TOKENS and token != EOS)
    ]
    with torch.no_grad():
        model.get_output_embeddings().weight[silent] = 0.0


def _random_model(
    model_class: type[PreTrainedModel],
    config: LlavaConfig | LlamaConfig,
    tokenizer: PreTrainedTokenizerFast,
    seed: int,
) -> PreTrainedModel:
    # fork_rng keeps the caller's global torch RNG untouched by our seeding.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    _silence_unlikely_tokens(model, tokenizer)
    text = config.get_text_config()
    model.generation_config.pad_token_id = text.pad_token_id
    model.generation_config.bos_token_id = text.bos_token_id
    model.generation_config.eos_token_id = text.eos_token_id
    return model.eval()


def _processor(tokenizer: PreTrainedTokenizerFast) -> LlavaProcessor:
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, which "default" then drops
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE,
    )


def build_tiny_llava(path: str, seed: int = 0) -> str:
    """Write a complete HF model directory (safetensors, processor, tokenizer) at `path`.

    Deterministic: the same seed gives bit-identical weights and the same tokenizer.
    """
    tokenizer = train_tokenizer()
    model = _random_model(LlavaForConditionalGeneration, _model_config(tokenizer), tokenizer, seed)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    _processor(tokenizer).save_pretrained(out)
    return str(out)


def ensure_tiny_llava(path: str) -> str:
    """Build the tiny LLaVA at `path` unless it is already there; safe to call concurrently."""
    return build_once(path, build_tiny_llava)


def build_tiny_llama(path: str, seed: int = 0) -> str:
    """Write a text-only chat LLM directory (safetensors, tokenizer with chat template).

    The tiny LLaVA's text model and tokenizer on their own; deterministic per seed.
    """
    tokenizer = train_tokenizer()
    tokenizer.chat_template = TEXT_CHAT_TEMPLATE
    model = _random_model(LlamaForCausalLM, _text_config(tokenizer), tokenizer, seed)
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return str(out)


def ensure_tiny_llama(path: str) -> str:
    """Build the tiny Llama at `path` unless it is already there; safe to call concurrently."""
    return build_once(path, build_tiny_llama)
