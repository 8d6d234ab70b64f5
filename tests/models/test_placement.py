"""The `models:` section and the plan checks that run before any model loads."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from factory.cli import main, samples_dir
from factory.models.placement import (
    PlanError,
    check_adapters_loadable,
    check_gpu_memory,
    place_models,
    service_reservations,
)
from factory.run_config import load_run_config
from tests.serve.adapters import make_lora_adapter

GPU_PRESET = "jobs/configs/caption_ultra_gpu.yaml"


def vllm_model(name: str, fraction: float, placement: str = "in_stage") -> list[str]:
    return [
        f"models.{name}.engine.kind=vllm",
        f"models.{name}.engine.model=s3://models/{name}/",
        f"models.{name}.engine.vllm.gpu_memory_utilization={fraction}",
        f"models.{name}.placement={placement}",
    ]


def expand_with(*models: str) -> list[str]:
    questions, answer = models
    return [
        "expand.questions.prompt=expand_questions",
        f"expand.questions.model={questions}",
        "expand.answer.prompt=expand_answer",
        f"expand.answer.model={answer}",
        "expand.resources.num_gpus=1",
    ]


def test_two_engines_at_085_on_one_gpu_are_refused_with_the_numbers():
    # today's per-stage layout: expand holds the VLM and the LLM in one GPU actor
    config = load_run_config(
        None, vllm_model("vlm", 0.85) + vllm_model("llm", 0.85) + expand_with("llm", "vlm")
    )
    with pytest.raises(PlanError) as refused:
        check_gpu_memory(config)
    message = str(refused.value)
    assert "stage 'expand'" in message and "llm 0.85 + vlm 0.85 = 1.7" in message


def test_the_same_models_as_services_fit():
    config = load_run_config(
        None,
        vllm_model("vlm", 0.85, "service")
        + vllm_model("llm", 0.85, "service")
        + expand_with("llm", "vlm")
        + ["models.vlm.service.num_gpus=1", "models.llm.service.num_gpus=1"],
    )
    check_gpu_memory(config)  # each service has a GPU of its own


def test_a_fractional_gpu_service_must_keep_its_share():
    config = load_run_config(
        None,
        vllm_model("vlm", 0.85, "service")
        + ["models.vlm.service.num_gpus=0.5", "caption.model=vlm"],
    )
    with pytest.raises(PlanError, match=r"model service 'vlm'.*0.85.*above 0.5.*2 of them"):
        check_gpu_memory(config)


def test_the_gpu_preset_passes_with_two_services_and_cpu_only_stages():
    config = place_models(load_run_config(GPU_PRESET), "run1")
    check_gpu_memory(config)
    reserved = service_reservations(config.models, config)
    assert [(who, n, gpus) for who, n, _, gpus in reserved] == [
        ("model service 'vlm'", 1, 1.0),
        ("model service 'llm'", 1, 1.0),
    ]
    for step in (config.caption, config.qa.step, config.expand.answer, config.critic.step):
        assert step.engine.kind == "service" and step.engine.service.app == "factory-vlm-run1"
    for step in (config.expand.questions, config.decompose.step, config.rewrite.step):
        assert step.engine.service.app == "factory-llm-run1"
    stages = ("caption", "qa", "expand", "decompose", "critic", "rewrite")
    assert all(getattr(config, name).resources.num_gpus == 0 for name in stages)


def test_a_plan_needing_more_gpus_than_the_cluster_has_is_refused(tmp_path, capsys, ray_local):
    code = main(
        ["caption", "--input", samples_dir(), "--output", str(tmp_path), "--config", GPU_PRESET]
    )
    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1, error  # one line, no traceback
    assert "needs at least 2 GPUs" in error[0] and "model service 'vlm' 1x2 CPU 1 GPU" in error[0]
    assert "has 0" in error[0]


def test_unknown_models_and_adapters_are_named():
    with pytest.raises(ValidationError, match=r"caption.model 'vlm' is not in `models:`"):
        load_run_config(None, ["caption.model=vlm"])
    with pytest.raises(ValidationError, match=r"caption.adapter 'museum' is not an adapter"):
        load_run_config(
            None,
            ["models.vlm.engine.model=builtin://tiny-llava", "caption.model=vlm"]
            + ["caption.adapter=museum"],
        )


def test_an_adapter_vllm_cannot_load_is_refused_with_the_reason(tmp_path):
    from factory.models.weights import resolve_model_path

    adapter = tmp_path / "projector-lora"
    make_lora_adapter(resolve_model_path("builtin://tiny-llama"), str(adapter), 1, text_only=True)
    settings = json.loads((adapter / "adapter_config.json").read_text())
    settings["modules_to_save"] = ["multi_modal_projector"]  # what train_projector saves
    (adapter / "adapter_config.json").write_text(json.dumps(settings))
    overrides = [
        "models.llm.engine.model=builtin://tiny-llama",
        f"models.llm.engine.adapters.projector={adapter}",
        "decompose.step.prompt=decompose",
        "decompose.step.model=llm",
    ]
    check_adapters_loadable(load_run_config(None, overrides))  # transformers applies it (PEFT)
    on_vllm = load_run_config(None, [*overrides, "models.llm.engine.kind=vllm"])
    with pytest.raises(PlanError, match=r"models.llm: adapter 'projector'.*whole modules"):
        check_adapters_loadable(on_vllm)


def test_an_adapter_folder_given_as_the_model_is_refused_with_what_to_do(tmp_path):
    from factory.models.weights import resolve_model_path

    adapter = make_lora_adapter(resolve_model_path("builtin://tiny-llava"), str(tmp_path), 2)
    config = load_run_config(None, [f"caption.engine.model={adapter}"])
    with pytest.raises(PlanError, match=r"caption: .* is a PEFT adapter, not a model"):
        check_adapters_loadable(config)
