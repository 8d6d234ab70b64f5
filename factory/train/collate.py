"""Turn (image, prompt, target) examples into model batches whose loss covers the target only.

Labels are the input ids with -100 on the prompt and padding, so the causal-LM loss (and a
DPO log-probability) counts only what the model must learn to write. Sequences are padded
on the right: real tokens then keep the positions they have in an unpadded sequence.

- LLaVA: the processor's chat template renders a user turn (image + prompt) and an
  assistant turn (target). The prompt is tokenised exactly as at inference (the template
  with its generation prompt, images expanded to their tokens), and the rest of the
  rendered conversation up to the end-of-sequence token is the target.
- BLIP captioning: "[DEC] prompt target [SEP]" with the prompt masked. BLIP's generate()
  swaps the first token for [DEC] and continues the prompt, so training starts the same way.
- BLIP QA: the question goes to the text encoder whole; the answer "[DEC] answer [SEP]" is
  the decoder's input and, but for [DEC], its labels, as BlipForQuestionAnswering expects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from PIL import Image

IGNORE_INDEX = -100  # what torch's cross entropy (and transformers' losses) skip

SFTExample = tuple[Image.Image, str, str]  # image, prompt, target
PreferenceExample = tuple[Image.Image, str, str, str]  # image, prompt, chosen, rejected
Family = Literal["llava", "blip"]
Task = Literal["caption", "qa"]

# One example before padding: token lists, and the image tensors (one row per image).
_Row = dict[str, Any]


def collate_sft(
    processor: Any,
    family: Family,
    examples: Sequence[SFTExample],
    max_length: int,
    task: Task = "caption",
) -> dict[str, torch.Tensor]:
    """A training batch: input ids, attention mask, pixel values and prompt-masked labels.

    BLIP QA (task="qa") adds decoder_input_ids / decoder_attention_mask. `max_length`
    bounds each sequence; a target that does not fit is cut, a prompt that does not fit
    (with room for one target token) raises, since cutting it would drop image tokens.
    """
    rows = [_encode(processor, family, task, example, max_length) for example in examples]
    return _pad(rows, processor, _lengths(rows))


def collate_preference(
    processor: Any,
    family: Family,
    examples: Sequence[PreferenceExample],
    max_length: int,
    task: Task = "caption",
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(chosen, rejected) batches masked as in `collate_sft`, padded to the same length so a
    caller may also concatenate them into one forward pass."""
    chosen = [
        _encode(processor, family, task, (image, prompt, good), max_length)
        for image, prompt, good, _ in examples
    ]
    rejected = [
        _encode(processor, family, task, (image, prompt, bad), max_length)
        for image, prompt, _, bad in examples
    ]
    lengths = _lengths(chosen + rejected)
    return _pad(chosen, processor, lengths), _pad(rejected, processor, lengths)


def _encode(processor: Any, family: str, task: str, example: tuple, max_length: int) -> _Row:
    image, prompt, target = example[0], example[1], example[2]
    if family == "llava":
        return _encode_llava(processor, image, prompt, target, max_length)
    if family == "blip":
        if task == "qa":
            return _encode_blip_qa(processor, image, prompt, target, max_length)
        return _encode_blip_caption(processor, image, prompt, target, max_length)
    raise ValueError(f"unknown family {family!r}: use 'llava' or 'blip'")


def _encode_llava(processor, image, prompt: str, target: str, max_length: int) -> _Row:
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
    assistant = {"role": "assistant", "content": [{"type": "text", "text": target}]}
    prompt_text = processor.apply_chat_template([user], add_generation_prompt=True, tokenize=False)
    full_text = processor.apply_chat_template([user, assistant], tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError(
            "the chat template renders the conversation with a different prefix than its "
            "generation prompt, so the prompt cannot be masked: "
            f"{prompt_text!r} vs {full_text[: len(prompt_text)]!r}"
        )
    completion = full_text[len(prompt_text) :]
    eos = processor.tokenizer.eos_token
    if eos and eos in completion:
        # Generation stops at EOS: whatever the template puts after it is never produced.
        completion = completion[: completion.rindex(eos) + len(eos)]
    # The template already wrote BOS and the like: add_special_tokens=False avoids a second.
    encoded = processor(
        text=prompt_text, images=image, add_special_tokens=False, return_tensors="pt"
    )
    prompt_ids = encoded["input_ids"][0].tolist()
    target_ids = processor.tokenizer(completion, add_special_tokens=False)["input_ids"]
    images = {k: v for k, v in encoded.items() if k not in ("input_ids", "attention_mask")}
    ids, labels = _join(prompt_ids, target_ids, max_length)
    return {"tokens": {"input_ids": ids, "labels": labels}, "images": images}


def _encode_blip_caption(processor, image, prompt: str, target: str, max_length: int) -> _Row:
    tokenizer = processor.tokenizer
    prompt_ids = [tokenizer.bos_token_id, *_words(tokenizer, prompt)]
    target_ids = [*_words(tokenizer, target), tokenizer.sep_token_id]
    ids, labels = _join(prompt_ids, target_ids, max_length)
    return {"tokens": {"input_ids": ids, "labels": labels}, "images": _pixels(processor, image)}


def _encode_blip_qa(processor, image, question: str, answer: str, max_length: int) -> _Row:
    tokenizer = processor.tokenizer
    question_ids = tokenizer(question, truncation=True, max_length=max_length)["input_ids"]
    answer_ids = [*_words(tokenizer, answer), tokenizer.sep_token_id]
    # [DEC] starts the decoder (generate() starts there too) and is never a label itself.
    decoder_ids, labels = _join([tokenizer.bos_token_id], answer_ids, max_length)
    return {
        "tokens": {"input_ids": question_ids, "decoder_input_ids": decoder_ids, "labels": labels},
        "images": _pixels(processor, image),
    }


def _words(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def _pixels(processor: Any, image: Image.Image) -> dict[str, torch.Tensor]:
    return dict(processor.image_processor(images=image, return_tensors="pt"))


def _join(prompt_ids: list[int], target_ids: list[int], max_length: int) -> tuple[list, list]:
    """Prompt + target ids, cut to max_length from the target's end; labels mask the prompt."""
    room = max_length - len(prompt_ids)
    if room < 1:
        raise ValueError(
            f"the prompt takes {len(prompt_ids)} tokens, leaving no room for the target within "
            f"max_length={max_length}; raise max_length or shorten the prompt"
        )
    target_ids = target_ids[:room]
    return prompt_ids + target_ids, [IGNORE_INDEX] * len(prompt_ids) + target_ids


def _lengths(rows: list[_Row]) -> dict[str, int]:
    fields = rows[0]["tokens"] if rows else {}
    return {name: max(len(row["tokens"][name]) for row in rows) for name in fields}


# Each padded field: the value that fills it, and the attention mask it gets (if any).
_PADDING = {
    "input_ids": ("pad", "attention_mask"),
    "decoder_input_ids": ("pad", "decoder_attention_mask"),
    "labels": (IGNORE_INDEX, None),
}


def _pad(rows: list[_Row], processor: Any, lengths: dict[str, int]) -> dict[str, torch.Tensor]:
    if not rows:
        raise ValueError("cannot collate an empty batch")
    pad_id = processor.tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has no pad token; set one before collating batches")
    batch: dict[str, torch.Tensor] = {}
    for name, length in lengths.items():
        fill, mask_name = _PADDING[name]
        value = pad_id if fill == "pad" else fill
        sequences = [row["tokens"][name] for row in rows]
        batch[name] = torch.tensor([seq + [value] * (length - len(seq)) for seq in sequences])
        if mask_name:
            batch[mask_name] = torch.tensor(
                [[1] * len(seq) + [0] * (length - len(seq)) for seq in sequences]
            )
    for name in rows[0]["images"]:
        batch[name] = torch.cat([row["images"][name] for row in rows])
    return batch
