"""Tiny random-weight CLIP, SigLIP and OWL detectors built offline, for tests and demos.

Each builder writes a complete HF model directory (safetensors, processor, tokenizer) that
loads through AutoModel / AutoModelForZeroShotObjectDetection / AutoProcessor like a hub
checkpoint, so the wrappers under test take the same code path as real weights. Weights are
random: the scores and boxes these models give are noise, not recognition.

All share one CLIP-style tokenizer (lower-cased byte-level BPE with "</w>" word ends) whose
merges are learnt here from a built-in corpus. Its end-of-text token has the highest id, as
in OpenAI's CLIP vocabulary: OWL text towers pool at `input_ids.argmax()` and rely on that.

OWLv2's image processor resizes with scipy; without scipy the OWLv2 directory still builds
and loads, but preprocessing an image raises. OWL-ViT's processor needs nothing beyond PIL.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
    Owlv2Config,
    Owlv2ForObjectDetection,
    Owlv2Processor,
    OwlViTConfig,
    OwlViTForObjectDetection,
    OwlViTProcessor,
    PreTrainedModel,
    SiglipConfig,
    SiglipModel,
    SiglipProcessor,
)
from transformers.models.clip import CLIPImageProcessorPil
from transformers.models.owlv2 import Owlv2ImageProcessorPil
from transformers.models.owlvit import OwlViTImageProcessorPil
from transformers.models.siglip import SiglipImageProcessorPil

from factory.models.weights import build_once

IMAGE_SIZE = 32
PATCH_SIZE = 8
HIDDEN_SIZE = 32
PROJECTION_DIM = 32  # OWL heads compare image features with text embeddings: must be equal
CLIP_TEXT_TOKENS = 32
OWL_TEXT_TOKENS = 16  # what real OWL checkpoints pad their queries to
MAX_MERGES = 512  # an upper bound; the corpus runs out of pairs sooner
BOS, EOS = "<|startoftext|>", "<|endoftext|>"
OWL_PAD = "!"  # real OWL tokenizers pad with "!" (a low id), keeping EOS the argmax
WORD_END = "</w>"
# CLIP's own split: letters, single digits, runs of other symbols; contractions kept whole.
_WORD_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
# Random heads with the default std of 1.0 saturate OWL's box sigmoid, so every box becomes
# the whole image; small heads keep each box near its patch, as trained heads do.
_HEAD_STD = 0.02

_SUBJECTS = (
    "painting drawing print woodcut etching engraving manuscript page sculpture statue bust "
    "relief vase bowl jar plate cup coin medal tapestry textile photograph map helmet sword "
    "shield armour ring necklace brooch chair cabinet chest lamp mirror icon altarpiece fresco "
    "mosaic mask figure portrait landscape horse dog bird lion dragon angel saint king queen "
    "ship boat tree mountain river sea sky cloud house church temple column arch"
)
_ADJECTIVES = (
    "red blue green gold silver bronze ivory black white grey painted carved glazed woven "
    "gilded ancient medieval small large old broken round"
)


_TEMPLATES = ("a photo of a {}.", "a {} in a museum", "an image of the {}", "a detail of a {}")


def _corpus() -> list[str]:
    """Deterministic text: every template filled with adjective + subject phrases."""
    adjectives, subjects = _ADJECTIVES.split(), _SUBJECTS.split()
    phrases = [f"{adjectives[i % len(adjectives)]} {subject}" for i, subject in enumerate(subjects)]
    return [template.format(phrase) for template in _TEMPLATES for phrase in phrases]


def _clip_pre_tokenizer() -> Tokenizer:
    """CLIP's normalisation and word split, to cut the corpus into words as CLIP would."""
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_WORD_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    return bpe


def _word_counts() -> Counter[tuple[str, ...]]:
    """Corpus words as symbol sequences, the last symbol carrying the word end."""
    splitter = _clip_pre_tokenizer()
    counts: Counter[tuple[str, ...]] = Counter()
    for text in _corpus():
        normalised = splitter.normalizer.normalize_str(text)
        for word, _ in splitter.pre_tokenizer.pre_tokenize_str(normalised):
            counts[(*word[:-1], word[-1] + WORD_END)] += 1
    return counts


def _trained_merges() -> list[tuple[str, str]]:
    """BPE merges learnt from the corpus: the most frequent adjacent pair, merged, repeated.

    Learnt here rather than by `tokenizers`' trainer, which orders equally frequent pairs
    differently from run to run; ties go to the alphabetically first pair, so the same
    corpus always gives the same tokenizer.
    """
    words = _word_counts()
    merges: list[tuple[str, str]] = []
    while len(merges) < MAX_MERGES:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in words.items():
            for pair in itertools.pairwise(symbols):
                pairs[pair] += count
        if not pairs:
            break
        best = min(pairs, key=lambda pair: (-pairs[pair], pair))
        merges.append(best)
        words = Counter({_merged(symbols, best): count for symbols, count in words.items()})
    return merges


def _merged(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out: list[str] = []
    i = 0
    while i < len(symbols):
        if symbols[i : i + 2] == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def _clip_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """OpenAI's layout: bytes, bytes ending a word, merged tokens, then BOS and EOS last.

    Every byte is there with and without the word end, so any text encodes without UNK.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = alphabet + [char + WORD_END for char in alphabet] + ["".join(m) for m in merges]
    ordered = [*dict.fromkeys(tokens), BOS, EOS]
    return {token: token_id for token_id, token in enumerate(ordered)}


def train_clip_tokenizer(max_length: int, pad_token: str = EOS) -> CLIPTokenizer:
    """The transformers CLIPTokenizer over BPE merges learnt from the built-in corpus."""
    merges = _trained_merges()
    return CLIPTokenizer(
        vocab=_clip_vocab(merges),
        merges=merges,
        pad_token=pad_token,
        model_max_length=max_length,
    )


def _text_config(tokenizer: CLIPTokenizer, max_positions: int) -> dict[str, Any]:
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": 2 * HIDDEN_SIZE,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": max_positions,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def _vision_config() -> dict[str, Any]:
    return {
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": 2 * HIDDEN_SIZE,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
    }


def _seeded(make: Callable[[], PreTrainedModel], seed: int) -> PreTrainedModel:
    # fork_rng keeps the caller's global torch RNG untouched by our seeding.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = make()
        _shrink_detection_heads(model)
    return model.eval()


def _shrink_detection_heads(model: PreTrainedModel) -> None:
    heads = [module for name, module in model.named_children() if name.endswith("_head")]
    with torch.no_grad():
        for head in heads:
            for layer in head.modules():
                if isinstance(layer, torch.nn.Linear):
                    layer.weight.normal_(0.0, _HEAD_STD)


def _save(path: str, model: PreTrainedModel, processor: Any) -> str:
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return str(out)


def _square(size: int) -> dict[str, int]:
    return {"height": size, "width": size}


def build_tiny_clip(path: str, seed: int = 0) -> str:
    """A CLIPModel (32-px images, 8-px patches, 2+2 layers) with CLIPProcessor at `path`.

    Deterministic: the same seed gives bit-identical weights and the same tokenizer.
    """
    tokenizer = train_clip_tokenizer(CLIP_TEXT_TOKENS)
    config = CLIPConfig(
        text_config=_text_config(tokenizer, CLIP_TEXT_TOKENS),
        vision_config=_vision_config(),
        projection_dim=PROJECTION_DIM,
    )
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size=_square(IMAGE_SIZE)
    )
    processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return _save(path, _seeded(lambda: CLIPModel(config), seed), processor)


def build_tiny_siglip(path: str, seed: int = 0) -> str:
    """A SiglipModel with a SiglipProcessor at `path` (sigmoid scoring with a logit bias).

    Real SigLIP checkpoints ship a sentencepiece tokenizer; this one reuses the CLIP-style
    tokenizer so that nothing beyond `tokenizers` is needed. SigLIP pools the last position,
    so texts are padded to `max_length` as SigLIP was trained.
    """
    tokenizer = train_clip_tokenizer(CLIP_TEXT_TOKENS)
    config = SiglipConfig(
        text_config={**_text_config(tokenizer, CLIP_TEXT_TOKENS), "projection_size": HIDDEN_SIZE},
        vision_config=_vision_config(),
    )
    image_processor = SiglipImageProcessorPil(size=_square(IMAGE_SIZE))
    processor = SiglipProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return _save(path, _seeded(lambda: SiglipModel(config), seed), processor)


def build_tiny_owlvit(path: str, seed: int = 0) -> str:
    """An OwlViTForObjectDetection (4x4 patches: 16 candidate boxes) with its processor."""
    tokenizer = train_clip_tokenizer(OWL_TEXT_TOKENS, pad_token=OWL_PAD)
    config = OwlViTConfig(
        text_config=_text_config(tokenizer, OWL_TEXT_TOKENS),
        vision_config=_vision_config(),
        projection_dim=PROJECTION_DIM,
    )
    image_processor = OwlViTImageProcessorPil(
        size=_square(IMAGE_SIZE), crop_size=_square(IMAGE_SIZE)
    )
    processor = OwlViTProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return _save(path, _seeded(lambda: OwlViTForObjectDetection(config), seed), processor)


def build_tiny_owlv2(path: str, seed: int = 0) -> str:
    """An Owlv2ForObjectDetection with its processor; running it needs scipy (see above)."""
    tokenizer = train_clip_tokenizer(OWL_TEXT_TOKENS, pad_token=OWL_PAD)
    config = Owlv2Config(
        text_config=_text_config(tokenizer, OWL_TEXT_TOKENS),
        vision_config=_vision_config(),
        projection_dim=PROJECTION_DIM,
    )
    image_processor = Owlv2ImageProcessorPil(size=_square(IMAGE_SIZE))
    processor = Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer)
    return _save(path, _seeded(lambda: Owlv2ForObjectDetection(config), seed), processor)


def ensure_tiny_clip(path: str) -> str:
    return build_once(path, build_tiny_clip)


def ensure_tiny_siglip(path: str) -> str:
    return build_once(path, build_tiny_siglip)


def ensure_tiny_owlvit(path: str) -> str:
    return build_once(path, build_tiny_owlvit)


def ensure_tiny_owlv2(path: str) -> str:
    return build_once(path, build_tiny_owlv2)
