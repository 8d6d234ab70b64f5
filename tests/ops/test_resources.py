"""Resource requests come from config per stage, never from the driver's hardware."""

from __future__ import annotations

import re

from factory.pipeline import stage_steps
from factory.run_config import load_run_config
from tests.ops.cluster_config import ROOT

CONFIGS = ROOT / "jobs" / "configs"
# calls that size work from the machine the code runs on
PROBES = re.compile(
    r"cpu_count\(|sched_getaffinity\(|cuda\.is_available\(|cuda\.device_count\(|nvidia-smi|GPUtil"
)


def _requests(preset: str, overrides: list[str] = ()) -> dict[str, tuple]:
    steps = stage_steps(load_run_config(CONFIGS / preset, list(overrides)), resume_from=None)
    return {
        step.columns.stage: (
            step.resources.num_cpus,
            step.resources.num_gpus,
            step.resources.concurrency,
        )
        for step in steps
    }


def _slots(preset: str) -> dict[str, dict[str, float]]:
    steps = stage_steps(load_run_config(CONFIGS / preset), resume_from=None)
    return {step.columns.stage: step.resources.custom_resources for step in steps}


def test_no_module_outside_models_probes_the_hardware():
    # models/ may pick a device inside the worker that runs the model; nothing else may
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "factory").rglob("*.py"))
        if "models" not in path.relative_to(ROOT / "factory").parts
        for number, line in enumerate(path.read_text("utf-8").splitlines(), 1)
        if PROBES.search(line)
    ]
    assert not found


def test_cpu_preset_asks_for_no_gpu_and_gpu_preset_for_whole_gpus():
    cpu = _requests("caption_default.yaml")
    assert cpu and all(gpus == 0 for _, gpus, _ in cpu.values())
    # the GPU preset's stages are CPU clients; the GPUs go to its two model services
    gpu = _requests("caption_ultra_gpu.yaml")
    assert all(gpus == 0 for _, gpus, _ in gpu.values())
    loop = ("caption", "qa", "expand", "decompose", "critic", "rewrite")
    assert all(gpu[stage][2] == (1, 8) for stage in loop)
    models = load_run_config(CONFIGS / "caption_ultra_gpu.yaml").models
    for spec in models.values():
        assert spec.placement == "service"
        assert (spec.service.num_gpus, spec.service.custom_resources) == (1, {"vlm_slot": 1})
        assert spec.service.autoscaling.min_replicas == 1
    assert not any(_slots("caption_ultra_gpu.yaml").values())
    assert not any(_slots("caption_default.yaml").values())


def test_a_request_changes_only_through_config():
    changed = _requests(
        "caption_ultra_gpu.yaml",
        ["caption.resources.num_gpus=0.5", "caption.resources.concurrency=[2,4]"],
    )
    assert changed["caption"][1:] == (0.5, (2, 4))
    assert changed["critic"][1:] == (0, (1, 8))
