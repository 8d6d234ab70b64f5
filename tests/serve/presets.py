"""Checks of serve_deploy_* presets: Ray Serve's own config schema, app args a ServeConfig."""

from __future__ import annotations

from pathlib import Path

import yaml

from factory.serve.serve_config import ServeConfig

BUILDER = "factory.serve.app_builder:build_app"


def check_serve_deploy_file(path: Path) -> list[ServeConfig]:
    from ray.serve.schema import ServeDeploySchema

    schema = ServeDeploySchema.model_validate(yaml.safe_load(path.read_text("utf-8")))
    configs = []
    for application in schema.applications:
        assert application.import_path == BUILDER
        configs.append(ServeConfig.model_validate(application.args))
    assert configs, f"{path} deploys no application"
    return configs
