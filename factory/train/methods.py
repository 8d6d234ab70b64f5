"""Fine-tuning methods: load a base model ready to train with full FT, LoRA, DoRA, QLoRA,
prompt tuning or prefix tuning, and describe what trains.

`MethodConfig` is light (pydantic only) because the run config imports it on the driver;
torch, transformers and peft load inside `load_for_training` / `load_base`, on the workers.

What each method does per family (tiny models measured on CPU, peft 0.21):
- full: every weight trains, except the vision tower while `freeze_vision`.
- lora / dora / qlora: PEFT adapters on `target_modules` (default: LLaVA's language-model
  q_proj/v_proj, BLIP's text query/value). QLoRA loads the language side 4-bit nf4 through
  bitsandbytes (the vision tower and LLaVA's projector stay in `dtype`).
- prompt_tuning / prefix_tuning: LLaVA only. PEFT's prompt-learning wrappers assume a causal
  LM whose forward takes `input_ids`/`inputs_embeds` and whose single word embedding and
  transformer stack they can find; BLIP's text decoder is a cross-attending BERT reached
  through the image model, so PEFT picks the vision encoder as the "transformer" and fails.
"""

from __future__ import annotations

import contextlib
import copy
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    import torch

Method = Literal["full", "lora", "dora", "qlora", "prompt_tuning", "prefix_tuning"]
Family = Literal["llava", "blip"]
Task = Literal["caption", "qa"]
ADAPTER_METHODS = ("lora", "dora", "qlora")
PROMPT_METHODS = ("prompt_tuning", "prefix_tuning")
PROJECTOR = "multi_modal_projector"  # LLaVA's vision-to-text projector module


class MethodConfig(BaseModel):
    """Which weights train and how: full fine-tuning, an adapter, or learnt prompts."""

    model_config = ConfigDict(extra="forbid")

    method: Method = Field(
        "lora",
        description="full: all weights (but see freeze_vision); lora / dora: low-rank adapters "
        "(DoRA adds a learnt magnitude); qlora: LoRA on a 4-bit nf4 base; prompt_tuning / "
        "prefix_tuning: learnt virtual tokens / per-layer prefixes (LLaVA only)",
    )
    r: int = Field(8, ge=1, description="adapter rank (lora, dora, qlora)")
    alpha: int = Field(16, ge=1, description="adapter scale numerator: updates scale by alpha/r")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="dropout on the adapter's input")
    target_modules: list[str] | None = Field(
        None,
        description="module names (last path part) that get adapters; None: LLaVA q_proj, "
        "v_proj / BLIP query, value. While freeze_vision, only text-side modules match",
    )
    num_virtual_tokens: int = Field(
        8, ge=1, description="learnt tokens (prompt_tuning) or prefix length (prefix_tuning)"
    )
    freeze_vision: bool = Field(
        True,
        description="keep the vision tower fixed: full FT leaves it out, adapters target "
        "only text-side modules; False trains it (full) or lets adapters reach it",
    )
    train_projector: bool = Field(
        False,
        description="LLaVA with lora/dora/qlora: also train the multi_modal_projector in full "
        "(saved with the adapter); full FT always trains it",
    )
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in backward: less memory, ~30% more time"
    )

    @model_validator(mode="after")
    def _options_fit_method(self) -> MethodConfig:
        # Refuse options the method would silently ignore, so a config says what it does.
        if self.target_modules is not None and self.method not in ADAPTER_METHODS:
            raise ValueError(
                f"target_modules applies to {ADAPTER_METHODS}, not method={self.method!r}"
            )
        if self.target_modules is not None and not self.target_modules:
            raise ValueError("target_modules is empty; use None for the family's defaults")
        if self.train_projector and self.method not in ADAPTER_METHODS:
            raise ValueError(
                f"train_projector applies to {ADAPTER_METHODS} (full FT trains the projector "
                f"anyway), not method={self.method!r}"
            )
        if not self.freeze_vision and self.method in PROMPT_METHODS:
            raise ValueError(
                f"freeze_vision=False has no effect with {self.method}: it trains only its "
                "virtual tokens"
            )
        return self


@dataclass(frozen=True)
class _FamilySpec:
    """Where things live in a family's module tree (regexes over module names)."""

    vision: str  # the vision tower
    text: str  # the text side that adapters target while the vision tower is frozen
    default_targets: tuple[str, ...]
    # kept in `dtype` under QLoRA: the vision side (as LLaVA's own QLoRA recipe does) and the
    # output layer, whose weight is tied to the input embeddings in BLIP
    not_quantized: tuple[str, ...]
    has_projector: bool


_FAMILIES: dict[str, _FamilySpec] = {
    "llava": _FamilySpec(
        vision=r"(?:.*\.)?vision_tower",
        text=r"(?:.*\.)?language_model",
        default_targets=("q_proj", "v_proj"),
        not_quantized=(r".*vision_tower", rf".*{PROJECTOR}", "lm_head"),
        has_projector=True,
    ),
    "blip": _FamilySpec(
        vision=r"vision_model",
        text=r"text_(?:encoder|decoder)",
        default_targets=("query", "value"),
        not_quantized=("vision_model", r".*cls\.predictions\.decoder"),
        has_projector=False,
    ),
}


@dataclass
class TrainableModel:
    """A model ready to train, with what the optimiser and a DPO loss need beside it.

    `reference()` is a context manager yielding the frozen reference policy, under
    torch.no_grad: for PEFT methods the same model with its adapter disabled (no memory
    cost), for full FT a frozen copy of the base taken at load time. It runs in whatever
    train/eval mode the caller has set.

    Under prompt_tuning the policy's logits start with `num_virtual_tokens` extra positions
    (PEFT pads the labels itself, so `.loss` is right); the reference's do not. Align both
    with the labels as `logits[:, -labels.shape[1]:]`.
    """

    model: Any  # a transformers model, or a peft.PeftModel around one
    processor: Any
    family: Family
    task: Task
    method: MethodConfig
    base_directory: str  # the resolved base weights, which adapters reload onto
    trainable_parameters: int
    total_parameters: int
    reference: Callable[[], contextlib.AbstractContextManager[Any]]


def load_for_training(
    model: str,
    family: Family,
    task: Task,
    method: MethodConfig,
    *,
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
    device: str = "cpu",
    cache_dir: str | None = None,
    with_reference: bool = True,
) -> TrainableModel:
    """Load `model` (local dir, s3://, builtin://) and set it up for `method`.

    `with_reference=False` skips the frozen copy full FT keeps for DPO (it doubles memory);
    `reference()` then raises. The returned model is in train mode.
    """
    from transformers import AutoProcessor

    from factory.models.weights import resolve_model_path

    _check_family_task(family, task)
    spec = _FAMILIES[family]
    _check_supported(family, method, spec)
    directory = resolve_model_path(model, cache_dir)
    network = load_base(directory, family, task, method, dtype=dtype, device=device)
    processor = AutoProcessor.from_pretrained(directory)

    if method.method == "full":
        reference = _frozen_copy(network) if with_reference else _no_reference
        _set_up_full(network, method, spec)
    else:
        network = _wrap_peft(network, family, method, spec)
        reference = _adapter_disabled(network)
    trainable, total = _count_parameters(network)
    _check_counts(trainable, total, method)
    return TrainableModel(
        model=network.train(),
        processor=processor,
        family=family,
        task=task,
        method=method,
        base_directory=directory,
        trainable_parameters=trainable,
        total_parameters=total,
        reference=reference,
    )


def load_base(
    model: str,
    family: Family,
    task: Task,
    method: MethodConfig,
    *,
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto",
    device: str = "cpu",
    cache_dir: str | None = None,
) -> Any:
    """The base model as `method` trains it, without adapters (4-bit under qlora): what a
    saved adapter reloads onto with `peft.PeftModel.from_pretrained(base, adapter_dir)`."""
    import torch

    from factory.models.loading import resolve_dtype
    from factory.models.weights import resolve_model_path

    _check_family_task(family, task)
    directory = resolve_model_path(model, cache_dir)
    torch_dtype = resolve_dtype(dtype, torch.device(device))
    return _load_base(directory, family, task, method, torch_dtype, device, _FAMILIES[family])


def parameter_groups(
    trainable: TrainableModel | torch.nn.Module, lr: float, projector_lr: float | None = None
) -> list[dict[str, Any]]:
    """Optimiser parameter groups: the trainable weights at `lr`, and LLaVA's projector at
    `projector_lr` in a group of its own when that is set (LLaVA trains it faster).

    Each group carries a "name" ("model" / "projector") for logging; torch keeps extra keys.
    """
    module = trainable.model if isinstance(trainable, TrainableModel) else trainable
    named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    if projector_lr is None:
        return [{"name": "model", "params": [p for _, p in named], "lr": lr}]
    in_projector = re.compile(rf"(?:^|\.){PROJECTOR}\.")
    projector = [p for name, p in named if in_projector.search(name)]
    rest = [p for name, p in named if not in_projector.search(name)]
    if not projector:
        raise ValueError(
            f"projector_lr is set but no trainable {PROJECTOR} parameters exist: it applies to "
            "LLaVA with method=full, or lora/dora/qlora with train_projector=True"
        )
    groups = [{"name": "model", "params": rest, "lr": lr}] if rest else []
    return [*groups, {"name": "projector", "params": projector, "lr": projector_lr}]


def _check_family_task(family: str, task: str) -> None:
    if family not in _FAMILIES:
        raise ValueError(f"unknown family {family!r}: use one of {sorted(_FAMILIES)}")
    if task not in ("caption", "qa"):
        raise ValueError(f"unknown task {task!r}: use 'caption' or 'qa'")


def _check_supported(family: str, method: MethodConfig, spec: _FamilySpec) -> None:
    if family == "blip" and method.method in PROMPT_METHODS:
        raise ValueError(
            f"{method.method} is not supported on BLIP: PEFT's prompt-learning wrappers need a "
            "causal LM whose forward takes input_ids/inputs_embeds and whose word embedding "
            "and layer stack they can locate, but BLIP's text decoder is a cross-attending "
            "BERT inside the image model (PEFT finds the vision encoder instead). Use full, "
            "lora, dora or qlora for BLIP"
        )
    if method.train_projector and not spec.has_projector:
        raise ValueError(f"train_projector: {family} has no multi_modal_projector")


def _load_base(
    directory: str,
    family: str,
    task: str,
    method: MethodConfig,
    torch_dtype: torch.dtype,
    device: str,
    spec: _FamilySpec,
) -> Any:
    from transformers import (
        AutoModelForImageTextToText,
        BitsAndBytesConfig,
        BlipConfig,
        BlipForConditionalGeneration,
        BlipForQuestionAnswering,
    )

    source: str | None = directory
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "use_safetensors": True}
    if family == "llava":
        model_class: Any = AutoModelForImageTextToText  # captions and QA alike: chat turns
    elif task == "qa":
        model_class = BlipForQuestionAnswering
        state = _blip_qa_state_dict(directory)
        if state is not None:
            # transformers takes weights from a state dict only without a checkpoint path.
            source = None
            kwargs.update(config=BlipConfig.from_pretrained(directory), state_dict=state)
    else:
        model_class = BlipForConditionalGeneration
    if method.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_compute_dtype=torch_dtype,
            llm_int8_skip_modules=list(spec.not_quantized),
        )
        kwargs["device_map"] = {"": device}  # bitsandbytes quantises as weights land there
        network = _guard_cpu_4bit_fast_path(model_class.from_pretrained(source, **kwargs))
    else:
        network = model_class.from_pretrained(source, **kwargs).to(device)
    # A state-dict load leaves no path behind; PEFT records it as the adapter's base model.
    network.name_or_path = directory
    return network


def _blip_qa_state_dict(directory: str) -> dict[str, Any] | None:
    """A captioning checkpoint's weights plus a text encoder for BlipForQuestionAnswering.

    Captioning checkpoints (Salesforce's, the tiny BLIP) have no question encoder. BLIP
    pre-trains its encoder and decoder from one BERT, so the decoder's BERT is the natural
    start for it; it is also deterministic, where a random init would not be. None when the
    checkpoint already has an encoder (a VQA checkpoint): it loads as it is.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    files = sorted(Path(directory).glob("*.safetensors"))
    keys: set[str] = set()
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            keys.update(handle.keys())
    if any(key.startswith("text_encoder.") for key in keys):
        return None
    state: dict[str, Any] = {}
    for file in files:
        state.update(load_file(str(file)))
    decoder_bert = "text_decoder.bert."
    for key in [key for key in state if key.startswith(decoder_bert)]:
        state["text_encoder." + key[len(decoder_bert) :]] = state[key].clone()
    return state


def _guard_cpu_4bit_fast_path(model: Any) -> Any:
    """Keep bitsandbytes' CPU inference fast path off layers it would break.

    In eval mode without gradients, bitsandbytes 0.50 repacks a 4-bit layer's weights for an
    AVX512-BF16 kernel that assumes in_features % blocksize == 0 and out_features % 32 == 0;
    smaller layers (the tiny BLIP's 32-wide ones) fail with a reshape error. Those layers
    take the plain dequantise-and-matmul path instead, which works for any shape.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            blocksize = module.weight.quant_state.blocksize
            if module.in_features % blocksize or module.out_features % 32:
                module.support_avx512bf16_for_cpu = False
    return model


def _set_up_full(model: Any, method: MethodConfig, spec: _FamilySpec) -> None:
    model.requires_grad_(True)
    if method.freeze_vision:
        vision = re.compile(rf"{spec.vision}\.")
        for name, parameter in model.named_parameters():
            if vision.match(name):
                parameter.requires_grad_(False)
    if method.gradient_checkpointing:
        _enable_checkpointing(model)


def _has_float16_weights(model: Any) -> bool:
    import torch

    return any(param.dtype == torch.float16 for param in model.parameters())


def _enable_checkpointing(model: Any) -> None:
    # Non-reentrant checkpointing needs no input that requires grad, so it also works when
    # the embeddings are frozen (adapters); the KV cache is useless while training.
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False


def _target_pattern(names: list[str] | tuple[str, ...], freeze_vision: bool, spec) -> str:
    """A regex PEFT full-matches against module names: `names` as last path parts, under
    the text side only while the vision tower is frozen."""
    alternatives = "|".join(re.escape(name) for name in names)
    scope = rf"{spec.text}\.(?:.*\.)?" if freeze_vision else r"(?:.*\.)?"
    return rf"{scope}(?:{alternatives})"


def _wrap_peft(model: Any, family: str, method: MethodConfig, spec: _FamilySpec) -> Any:
    from peft import (
        LoraConfig,
        PrefixTuningConfig,
        PromptTuningConfig,
        get_peft_model,
        prepare_model_for_kbit_training,
    )

    # PEFT's causal-LM wrapper (generate, prompt learning) fits LLaVA; BLIP's forward and
    # generate take pixel_values first and need the plain wrapper.
    task_type = "CAUSAL_LM" if family == "llava" else None
    if method.method == "qlora" and _has_float16_weights(model):
        # PEFT's k-bit preparation casts every weight that is not 4-bit (vision tower,
        # embeddings, lm_head) to float32, which float16 needs for stable training. bfloat16
        # has float32's range, and the cast would cost a 7B LLaVA ~1.2 GB of GPU memory.
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=method.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif method.gradient_checkpointing:
        _enable_checkpointing(model)
    if method.method in PROMPT_METHODS:
        config_class = (
            PromptTuningConfig if method.method == "prompt_tuning" else PrefixTuningConfig
        )
        config: Any = config_class(
            task_type=task_type, num_virtual_tokens=method.num_virtual_tokens
        )
    else:
        names = method.target_modules or spec.default_targets
        config = LoraConfig(
            r=method.r,
            lora_alpha=method.alpha,
            lora_dropout=method.dropout,
            target_modules=_target_pattern(names, method.freeze_vision, spec),
            use_dora=method.method == "dora",
            modules_to_save=[PROJECTOR] if method.train_projector else None,
            task_type=task_type,
        )
    try:
        return get_peft_model(model, config)
    except ValueError as error:
        if "target" not in str(error).lower():
            raise
        where = "text-side " if method.freeze_vision else ""
        raise ValueError(
            f"no {where}module of this {family} model is named any of "
            f"{list(method.target_modules or spec.default_targets)}; set method.target_modules "
            "to names of its Linear layers"
        ) from error


def _count_parameters(model: Any) -> tuple[int, int]:
    from peft import PeftModel

    if isinstance(model, PeftModel):
        # PEFT counts 4-bit weights as the values they stand for, not their packed bytes.
        return model.get_nb_trainable_parameters()
    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)


def _check_counts(trainable: int, total: int, method: MethodConfig) -> None:
    if trainable == 0:
        raise ValueError(
            f"method={method.method} left no trainable parameters (check target_modules and "
            "freeze_vision)"
        )
    if method.method != "full" and trainable >= total:
        raise RuntimeError(
            f"method={method.method} should train a small part of the model, but all "
            f"{total} parameters are trainable"
        )


def _frozen_copy(model: Any) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    reference = copy.deepcopy(model).eval().requires_grad_(False)

    @contextlib.contextmanager
    def use() -> Iterator[Any]:
        import torch

        # Callers move the policy after loading (model.to(device)); the copy follows it on
        # first use (a no-op afterwards), so both always see the batch on one device.
        reference.to(next(model.parameters()).device)
        with torch.no_grad():
            yield reference

    return use


def _adapter_disabled(model: Any) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    @contextlib.contextmanager
    def use() -> Iterator[Any]:
        import torch

        with model.disable_adapter(), torch.no_grad():
            yield model

    return use


@contextlib.contextmanager
def _no_reference() -> Iterator[Any]:
    raise RuntimeError(
        "this full fine-tuning model was loaded with with_reference=False, so it has no frozen "
        "reference copy; load it with with_reference=True for DPO"
    )
    yield  # unreachable; makes this a generator for contextmanager
