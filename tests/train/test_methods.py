"""Fine-tuning methods on the tiny LLaVA and BLIP: each trains what it says and nothing else.

A 2-example overfit set, a few AdamW steps: the loss falls, trainable weights move, frozen
ones stay bit-identical, the DPO reference stays put, adapters save in PEFT's format and
reload onto the base; batches put the loss on the target only.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from PIL import Image
from pydantic import ValidationError

from factory.train.collate import IGNORE_INDEX, collate_preference, collate_sft
from factory.train.methods import (
    MethodConfig,
    TrainableModel,
    load_base,
    load_for_training,
    parameter_groups,
)

MODELS = {"llava": "builtin://tiny-llava", "blip": "builtin://tiny-blip"}
PROMPT = "Describe the image."
PEFT_METHODS = ["lora", "dora", "qlora", "prompt_tuning", "prefix_tuning"]
# (family, task, method) for every combination that trains
CASES = (
    [("llava", "caption", method) for method in ["full", *PEFT_METHODS]]
    + [("blip", "caption", method) for method in ["full", "lora", "dora", "qlora"]]
    + [("blip", "qa", method) for method in ["full", "lora", "dora", "qlora"]]
)
STEPS = 8


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("models"))


def _images() -> list[Image.Image]:
    return [Image.new("RGB", (50, 40), (200, 20, 20)), Image.new("RGB", (40, 60), (20, 20, 200))]


def _examples(task: str) -> list[tuple[Image.Image, str, str]]:
    if task == "qa":
        questions = ["what colour is the vase?", "what colour is the coin?"]
        return list(zip(_images(), questions, ["red", "blue"], strict=True))
    targets = ["a red vase of clay in the centre", "a blue coin on a dark ground"]
    return [(image, PROMPT, target) for image, target in zip(_images(), targets, strict=True)]


def _load(family, task, cache_dir, **options) -> TrainableModel:
    # dropout 0: the before/after comparisons below are then deterministic
    config = MethodConfig(**{"dropout": 0.0, **options})
    return load_for_training(MODELS[family], family, task, config, cache_dir=cache_dir)


def _lr(family: str, method: str) -> float:
    if method == "full":
        return 1e-3
    if method in ("prompt_tuning", "prefix_tuning"):
        return 1e-1  # a handful of virtual tokens: the usual prompt-tuning step is large
    # The tiny BLIP's 32-wide text layers give rank-8 adapters little reach over a
    # 30k-token output, so they need a bolder step than LLaVA's to move in a few steps.
    return 5e-2 if family == "blip" else 1e-2


def _snapshot(model) -> dict[str, tuple[bool, torch.Tensor]]:
    return {n: (p.requires_grad, p.detach().clone()) for n, p in model.named_parameters()}


def _reference_loss(trainable: TrainableModel, batch) -> torch.Tensor:
    with trainable.reference() as reference:
        output = reference(**batch)
        assert not output.loss.requires_grad
        return output.loss


@pytest.mark.parametrize(("family", "task", "method"), CASES)
def test_training_moves_only_trainable_weights(family, task, method, cache_dir):
    torch.manual_seed(0)  # adapters start from random matrices
    trainable = _load(family, task, cache_dir, method=method)
    assert 0 < trainable.trainable_parameters < trainable.total_parameters
    if method != "full":
        assert trainable.trainable_parameters < trainable.total_parameters / 10
    batch = collate_sft(trainable.processor, family, _examples(task), 64, task=task)
    before = _snapshot(trainable.model)
    reference_before = _reference_loss(trainable, batch)
    optimizer = torch.optim.AdamW(parameter_groups(trainable, _lr(family, method)))
    losses = []
    for _ in range(STEPS):
        loss = trainable.model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    final = trainable.model(**batch).loss.item()

    assert final < losses[0] - 0.05, losses
    for name, parameter in trainable.model.named_parameters():
        was_trainable, old = before[name]
        moved = not torch.equal(parameter.detach(), old)
        assert moved == was_trainable, f"{name}: trainable={was_trainable}, moved={moved}"
    # the DPO reference is the base, untouched by training
    assert torch.allclose(_reference_loss(trainable, batch), reference_before)


@pytest.mark.parametrize("family", ["llava", "blip"])
def test_full_fine_tuning_freezes_only_the_vision_tower(family, cache_dir):
    trainable = _load(family, "caption", cache_dir, method="full")
    vision = "vision_tower" if family == "llava" else "vision_model"
    for name, parameter in trainable.model.named_parameters():
        assert parameter.requires_grad == (vision not in name), name
    unfrozen = _load(family, "caption", cache_dir, method="full", freeze_vision=False)
    assert unfrozen.trainable_parameters == unfrozen.total_parameters


def test_adapters_stay_on_the_text_side_unless_vision_is_unfrozen(cache_dir):
    text_only = _load("llava", "caption", cache_dir, method="lora")
    both = _load("llava", "caption", cache_dir, method="lora", freeze_vision=False)

    def adapted(trainable):
        return {n for n, p in trainable.model.named_parameters() if p.requires_grad}

    assert adapted(text_only) and all("language_model" in n for n in adapted(text_only))
    assert any("vision_tower" in n for n in adapted(both))
    assert all(
        n.endswith(
            (
                "q_proj.lora_A.default.weight",
                "q_proj.lora_B.default.weight",
                "v_proj.lora_A.default.weight",
                "v_proj.lora_B.default.weight",
            )
        )
        for n in adapted(both)
    )


def test_blip_qa_starts_its_question_encoder_from_the_caption_decoder(cache_dir):
    model = _load("blip", "qa", cache_dir, method="full").model
    encoder = model.text_encoder.state_dict()
    decoder = model.text_decoder.bert.state_dict()
    assert encoder.keys() == decoder.keys()
    assert all(torch.equal(encoder[key], decoder[key]) for key in encoder)


def test_qlora_loads_the_language_model_in_4bit(cache_dir):
    import bitsandbytes as bnb

    trainable = _load("llava", "caption", cache_dir, method="qlora")
    quantized = [n for n, m in trainable.model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and all("language_model" in n for n in quantized)
    assert trainable.model.base_model.model.lm_head.weight.dtype == torch.float32


CASE_IDS = [f"{family}-{task}-{method}" for family, task, method in CASES if method != "full"]


@pytest.mark.parametrize(
    ("family", "task", "method"),
    [case for case in CASES if case[2] != "full"],
    ids=CASE_IDS,
)
def test_adapter_saves_reloads_onto_the_base_and_generates(
    family, task, method, cache_dir, tmp_path
):
    trainable = _load(family, task, cache_dir, method=method)
    batch = collate_sft(trainable.processor, family, _examples(task), 64, task=task)
    optimizer = torch.optim.AdamW(parameter_groups(trainable, _lr(family, method)))
    for _ in range(2):
        trainable.model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    trainable.model.save_pretrained(tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {
        path.name for path in Path(tmp_path).iterdir()
    }
    saved = json.loads((tmp_path / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == trainable.base_directory
    base = load_base(MODELS[family], family, task, trainable.method, cache_dir=cache_dir)
    reloaded = PeftModel.from_pretrained(base, tmp_path).train()  # train mode, as trained
    with torch.no_grad():
        expected = trainable.model(**batch).loss
        assert torch.allclose(reloaded(**batch).loss, expected, atol=1e-5)

    reloaded.eval()
    images = [image for image, _, _ in _examples(task)]
    processor = trainable.processor
    if family == "llava":
        user = [{"type": "image"}, {"type": "text", "text": PROMPT}]
        text = processor.apply_chat_template(
            [{"role": "user", "content": user}], add_generation_prompt=True
        )
        inputs = processor(
            text=[text] * 2, images=images, return_tensors="pt", add_special_tokens=False
        )
    else:
        prompts = [prompt for _, prompt, _ in _examples(task)] if task == "qa" else None
        inputs = processor(images=images, text=prompts, return_tensors="pt", padding=True)
    output = reloaded.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert output.shape[0] == 2
    assert all(isinstance(text, str) for text in processor.batch_decode(output))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"method": "prompt_tuning"}, "not supported on BLIP"),
        ({"method": "prefix_tuning"}, "not supported on BLIP"),
        ({"method": "lora", "train_projector": True}, "no multi_modal_projector"),
        ({"method": "lora", "target_modules": ["nonexistent"]}, "no text-side module"),
        ({"method": "lora", "target_modules": ["qkv"]}, "no text-side module"),  # vision only
    ],
)
def test_blip_refusals_say_why(options, match, cache_dir):
    with pytest.raises(ValueError, match=match):
        _load("blip", "caption", cache_dir, **options)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"method": "full", "target_modules": ["q_proj"]}, "target_modules applies to"),
        ({"method": "prompt_tuning", "target_modules": ["q_proj"]}, "target_modules"),
        ({"method": "lora", "target_modules": []}, "empty"),
        ({"method": "full", "train_projector": True}, "train_projector applies"),
        ({"method": "prefix_tuning", "freeze_vision": False}, "no effect"),
        ({"method": "adapters"}, "method"),
        ({"rank": 4}, "rank"),
        ({"r": 0}, "r"),
    ],
)
def test_config_refusals(options, match):
    with pytest.raises(ValidationError, match=match):
        MethodConfig(**options)


def test_projector_gets_its_own_learning_rate(cache_dir):
    full = _load("llava", "caption", cache_dir, method="full")
    groups = parameter_groups(full, 1e-4, 1e-3)
    assert [(g["name"], g["lr"]) for g in groups] == [("model", 1e-4), ("projector", 1e-3)]
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in full.model.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable)  # each trainable weight exactly once
    projector = {id(p) for p in full.model.model.multi_modal_projector.parameters()}
    assert {id(p) for p in groups[1]["params"]} == projector
    assert len(parameter_groups(full.model, 1e-4)) == 1  # a bare module works too

    lora = _load("llava", "caption", cache_dir, method="lora", train_projector=True)
    projector_group = parameter_groups(lora, 1e-4, 1e-3)[1]["params"]
    assert len(projector_group) == 4  # linear_1/linear_2 weight and bias, trainable copies
    with pytest.raises(ValueError, match="train_projector=True"):
        parameter_groups(_load("llava", "caption", cache_dir, method="lora"), 1e-4, 1e-3)


def test_full_without_reference_raises_on_use(cache_dir):
    trainable = load_for_training(
        MODELS["blip"],
        "blip",
        "caption",
        MethodConfig(method="full"),
        cache_dir=cache_dir,
        with_reference=False,
    )
    with pytest.raises(RuntimeError, match="with_reference=True"), trainable.reference():
        pass


@pytest.mark.parametrize(("family", "method"), [("llava", "lora"), ("blip", "full")])
def test_gradient_checkpointing_trains(family, method, cache_dir):
    trainable = _load(family, "caption", cache_dir, method=method, gradient_checkpointing=True)
    assert trainable.model.is_gradient_checkpointing
    batch = collate_sft(trainable.processor, family, _examples("caption"), 64)
    optimizer = torch.optim.AdamW(parameter_groups(trainable, _lr(family, method)))
    losses = []
    for _ in range(4):
        loss = trainable.model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# --- collation: the loss sees the target only -------------------------------------------


def _labelled(batch, row: int) -> list[int]:
    labels = batch["labels"][row]
    return labels[labels != IGNORE_INDEX].tolist()


def test_llava_batch_masks_prompt_and_padding(cache_dir):
    processor = _load("llava", "caption", cache_dir, method="lora").processor
    examples = _examples("caption")
    batch = collate_sft(processor, "llava", examples, 128)
    tokenizer = processor.tokenizer
    for row, (image, prompt, target) in enumerate(examples):
        user = [{"type": "image"}, {"type": "text", "text": prompt}]
        text = processor.apply_chat_template(
            [{"role": "user", "content": user}], add_generation_prompt=True
        )
        # the prompt is exactly what generation sees, images expanded, all of it masked
        prompt_ids = processor(text=text, images=image, add_special_tokens=False)["input_ids"][0]
        n = len(prompt_ids)
        assert batch["input_ids"][row, :n].tolist() == list(prompt_ids)
        assert (batch["labels"][row, :n] == IGNORE_INDEX).all()
        assert tokenizer.decode(_labelled(batch, row)) == f" {target}{tokenizer.eos_token}"
        # padding on the right: not attended, not labelled
        length = int(batch["attention_mask"][row].sum())
        assert batch["attention_mask"][row, :length].all()
        assert (batch["labels"][row, length:] == IGNORE_INDEX).all()
        assert (batch["input_ids"][row, length:] == tokenizer.pad_token_id).all()
    assert batch["pixel_values"].shape[0] == 2


def test_loss_covers_only_labelled_tokens(cache_dir):
    trainable = _load("llava", "caption", cache_dir, method="lora")
    batch = collate_sft(trainable.processor, "llava", _examples("caption"), 128)
    with torch.no_grad():
        output = trainable.model(**batch)
    logits, labels = output.logits[:, :-1], batch["labels"][:, 1:]
    mask = labels != IGNORE_INDEX
    manual = torch.nn.functional.cross_entropy(logits[mask], labels[mask])
    assert torch.allclose(output.loss, manual, atol=1e-5)
    assert mask.sum() < batch["attention_mask"].sum() / 2  # most tokens are prompt


def test_blip_caption_batch_starts_at_dec_and_masks_prompt(cache_dir):
    processor = _load("blip", "caption", cache_dir, method="lora").processor
    tokenizer = processor.tokenizer
    batch = collate_sft(processor, "blip", _examples("caption"), 64)
    prompt_length = 1 + len(tokenizer(PROMPT, add_special_tokens=False)["input_ids"])
    for row, (_, _, target) in enumerate(_examples("caption")):
        assert batch["input_ids"][row, 0] == tokenizer.bos_token_id  # [DEC], as generate()
        assert (batch["labels"][row, :prompt_length] == IGNORE_INDEX).all()
        labelled = _labelled(batch, row)
        assert labelled[-1] == tokenizer.sep_token_id  # the caption learns to end
        assert tokenizer.decode(labelled[:-1]) == target
    empty_prompt = collate_sft(processor, "blip", [(_images()[0], "", "a vase")], 64)
    assert _labelled(empty_prompt, 0) == empty_prompt["input_ids"][0, 1:].tolist()


def test_blip_qa_batch_encodes_question_and_labels_answer(cache_dir):
    processor = _load("blip", "qa", cache_dir, method="lora").processor
    tokenizer = processor.tokenizer
    batch = collate_sft(processor, "blip", _examples("qa"), 64, task="qa")
    assert set(batch) == {
        "input_ids",
        "attention_mask",
        "pixel_values",
        "decoder_input_ids",
        "decoder_attention_mask",
        "labels",
    }
    question = tokenizer("what colour is the vase?")["input_ids"]
    assert batch["input_ids"][0, : len(question)].tolist() == question
    assert batch["decoder_input_ids"][0, 0] == tokenizer.bos_token_id
    assert batch["labels"][0, 0] == IGNORE_INDEX
    assert tokenizer.decode(_labelled(batch, 0)) == "red [SEP]"
    assert batch["labels"].shape == batch["decoder_input_ids"].shape


@pytest.mark.parametrize(
    ("family", "task"), [("llava", "caption"), ("blip", "caption"), ("blip", "qa")]
)
def test_preference_batches_share_prompt_and_length(family, task, cache_dir):
    processor = _load(family, task, cache_dir, method="lora").processor
    rows = [
        (image, prompt, target, "a gold mask of wood in the sky at the top left corner")
        for image, prompt, target in _examples(task)
    ]
    chosen, rejected = collate_preference(processor, family, rows, 64, task=task)
    assert chosen.keys() == rejected.keys()
    for name in chosen:
        assert chosen[name].shape == rejected[name].shape, name
    reference = collate_sft(processor, family, [row[:3] for row in rows], 64, task=task)
    for row in range(2):
        assert _labelled(chosen, row) == _labelled(reference, row)
        first_label = int((chosen["labels"][row] != IGNORE_INDEX).nonzero()[0])
        assert first_label == int((rejected["labels"][row] != IGNORE_INDEX).nonzero()[0])


def test_max_length_cuts_the_target_and_refuses_a_cut_prompt(cache_dir):
    processor = _load("llava", "caption", cache_dir, method="lora").processor
    long = [(_images()[0], PROMPT, "a red vase " * 50)]
    batch = collate_sft(processor, "llava", long, 40)
    assert batch["input_ids"].shape[1] == 40
    assert (batch["labels"][0] != IGNORE_INDEX).any()
    with pytest.raises(ValueError, match="max_length=20"):
        collate_sft(processor, "llava", long, 20)  # 16 image tokens + the template
