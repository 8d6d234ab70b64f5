"""Serving presets, the Serve config file, the builder, and `factory serve` end to end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import yaml
from pydantic import ValidationError

from factory.config_loading import load_config
from factory.serve.app_builder import build_app, build_application
from factory.serve.serve_config import ServeConfig
from tests.serve.apps import free_port
from tests.serve.presets import check_serve_deploy_file

CONFIGS = Path(__file__).resolve().parents[2] / "jobs" / "configs"
REPO_ROOT = CONFIGS.parents[1]


def test_deploy_file_args_are_the_gpu_preset():
    path = CONFIGS / "serve_deploy_gpu.yaml"
    (deployed,) = check_serve_deploy_file(path)
    assert deployed == load_config(CONFIGS / "serve_gpu_vllm.yaml", model=ServeConfig)
    # the proxy must not cut a request the app would still answer with its own JSON error
    http_options = yaml.safe_load(path.read_text("utf-8"))["http_options"]
    assert http_options["request_timeout_s"] >= deployed.proxy_timeout_s()


def test_builder_applies_the_config_to_both_deployments():
    config = load_config(CONFIGS / "serve_gpu_vllm.yaml", model=ServeConfig)
    application = build_app({"config_path": str(CONFIGS / "serve_gpu_vllm.yaml")})
    ingress = application._bound_deployment
    (model,) = [arg for arg in ingress.init_args if not isinstance(arg, ServeConfig)]
    model_options = model._bound_deployment._deployment_config
    assert model_options.max_queued_requests == 128
    assert model_options.max_ongoing_requests == 48
    assert model_options.autoscaling_config.max_replicas == 8
    assert model_options.autoscaling_config.target_ongoing_requests == 24
    assert model_options.graceful_shutdown_timeout_s == 60
    assert model._bound_deployment.ray_actor_options["num_gpus"] == 1
    assert model._bound_deployment.ray_actor_options["resources"] == {"vlm_slot": 1}
    assert ingress._deployment_config.autoscaling_config.max_replicas == 4
    assert ingress.init_args[0] == config
    # building loads nothing: the vLLM model is only named here
    assert build_application(config) is not None


def test_bad_serving_configs_are_refused():
    with pytest.raises(ValidationError, match="adapters"):
        ServeConfig.model_validate({"engine": {"model": "m", "adapters": {"a": "/x"}}})
    with pytest.raises(ValidationError, match="critic.model"):
        ServeConfig.model_validate({"critic": {"model": "missing"}})
    with pytest.raises(ValidationError, match="min_replicas"):
        ServeConfig.model_validate(
            {"model_deployment": {"autoscaling": {"min_replicas": 3, "max_replicas": 2}}}
        )
    with pytest.raises(ValidationError):
        ServeConfig.model_validate({"url_fetch": {"allowed_networks": ["not-a-cidr"]}})
    with pytest.raises(ValueError, match="not both"):
        build_app({"config_path": "x.yaml", "model_name": "y"})


def test_the_ingress_gathers_only_where_calls_are_what_a_replica_pays_for():
    def preset(path: str, **model_deployment) -> ServeConfig:
        overrides = [f"model_deployment.{key}={value}" for key, value in model_deployment.items()]
        return load_config(CONFIGS / path, overrides, model=ServeConfig)

    assert preset("serve_tiny_cpu.yaml").gathers_in_ingress()  # transformers, one replica
    assert not preset("serve_tiny_cpu.yaml", max_batch_size=1).gathers_in_ingress()
    assert not preset("serve_tiny_cpu.yaml", gather_in_ingress="false").gathers_in_ingress()
    assert not preset("serve_gpu_vllm.yaml").gathers_in_ingress()
    # vLLM schedules each request itself; the autoscaler counts calls
    vllm = ServeConfig.model_validate({"engine": {"kind": "vllm", "model": "m"}})
    assert not vllm.gathers_in_ingress()
    autoscaled = {"autoscaling": {"max_replicas": 2}}
    assert not ServeConfig.model_validate({"model_deployment": autoscaled}).gathers_in_ingress()
    with pytest.raises(ValidationError, match="autoscaler counts calls"):
        ServeConfig.model_validate({"model_deployment": {**autoscaled, "gather_in_ingress": True}})


def test_auth_configured_but_unset_refuses_to_start(monkeypatch):
    from factory.serve.auth import read_api_keys

    config = ServeConfig.model_validate({"auth": {"api_keys_env": "FACTORY_TEST_UNSET_KEYS"}})
    monkeypatch.delenv("FACTORY_TEST_UNSET_KEYS", raising=False)
    with pytest.raises(RuntimeError, match="FACTORY_TEST_UNSET_KEYS"):
        read_api_keys(config.auth)
    monkeypatch.setenv("FACTORY_TEST_UNSET_KEYS", " a , ,b ")
    assert read_api_keys(config.auth) == [b"a", b"b"]


def test_factory_serve_runs_the_tiny_preset_until_interrupted(tmp_path):
    """The CLI command on the shipped preset: ready, answers, stops cleanly on Ctrl-C."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "RAY_ADDRESS": ""}
    command = [
        sys.executable,
        "-m",
        "factory.cli",
        "serve",
        "--config",
        str(CONFIGS / "serve_tiny_cpu.yaml"),
        "--set",
        f"http.port={port}",
        "--set",
        "generation.max_new_tokens=4",
        "--set",
        "model_deployment.num_cpus=0.5",
    ]
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below, after the process
    # started the way a script's background job is: with SIGINT ignored, which Python then
    # leaves alone, so only the server's own handler can make Ctrl-C stop it
    process = subprocess.Popen(
        command,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if requests.get(f"{url}/readyz", timeout=2).ok:
                    break
            except (requests.ConnectionError, requests.Timeout):
                pass  # not listening, or the app not deployed, yet
            time.sleep(0.5)
        while "serving [" not in (tmp_path / "serve.log").read_text():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.2)
        models = requests.get(f"{url}/v1/models", timeout=10).json()
        assert [m["id"] for m in models["data"]] == ["tiny-llava"]
        process.send_signal(signal.SIGINT)
        try:
            assert process.wait(timeout=60) == 0
        except subprocess.TimeoutExpired:
            raise AssertionError((tmp_path / "serve.log").read_text()[-3000:]) from None
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert "serving ['tiny-llava'] at http://127.0.0.1" in output and "stopping" in output
