"""Importing the library's light modules must not load heavy ML stacks.

Drivers and configs import these; torch, transformers, vllm and ray.data load only inside
the actors and engines that use them. A fresh interpreter keeps other tests' imports out.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY_MODULES = ("torch", "transformers", "vllm", "onnxruntime", "deepspeed", "ray.data")
# what `factory <command>` loads before any work starts, and the stage modules a plan names
LIGHT_MODULES = (
    "factory",
    "factory.cli",
    "factory.run_config",
    "factory.pipeline",
    "factory.runner",
    "factory.stages.caption",
    "factory.stages.clip",
    "factory.stages.detect",
    "factory.stages.ocr",
    "factory.stage_kit.chat_step",
    "factory.stages.qa",
    "factory.stages.expand",
    "factory.stages.decompose",
    "factory.stages.critic",
    "factory.stages.rewrite",
    "factory.stages.health",
    "factory.text.parse",
    "factory.text.health",
    "factory.cli_parser",
    "factory.vocab",
    "factory.models.ocr",
    "factory.models.engine",
    "factory.models.weights",
)


def _modules_loaded_by(modules: tuple[str, ...]) -> set[str]:
    script = (
        f"import json, sys\nimport {', '.join(modules)}\nprint(json.dumps(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    return set(json.loads(result.stdout))


def test_import_factory_alone_is_light():
    loaded = _modules_loaded_by(("factory",))
    assert [name for name in (*HEAVY_MODULES, "ray", "pyarrow") if name in loaded] == []


def test_light_modules_do_not_import_heavy_stacks():
    loaded = _modules_loaded_by(LIGHT_MODULES)
    assert set(LIGHT_MODULES) <= loaded
    assert [name for name in HEAVY_MODULES if name in loaded] == []


def test_serve_train_and_eval_configs_load_without_the_stage_configs():
    loaded = _modules_loaded_by(
        (
            "factory.config_loading",
            "factory.serve.serve_config",
            "factory.train.train_config",
            "factory.eval.eval_config",
        )
    )
    assert "factory.config_loading" in loaded
    assert [
        name for name in loaded if name.startswith(("factory.stages", "factory.run_config"))
    ] == []
