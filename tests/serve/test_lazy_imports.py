"""The serving config and builder import light: `factory serve --help`, `factory config`
and the preset tests must not pay for Ray Serve, FastAPI, torch or an engine."""

from __future__ import annotations

from tests.test_lazy_imports import HEAVY_MODULES, _modules_loaded_by

SERVE_LIGHT = (
    "factory.serve",
    "factory.serve.serve_config",
    "factory.serve.app_builder",
    "factory.cli",
)


def test_serving_config_and_builder_are_light():
    loaded = _modules_loaded_by(SERVE_LIGHT)
    heavy = (*HEAVY_MODULES, "ray.serve", "fastapi", "peft", "aiohttp")
    assert [name for name in heavy if name in loaded] == []
