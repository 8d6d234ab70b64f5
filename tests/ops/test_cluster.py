"""cluster.yaml: Ray's own validation, pinned image, GPU placement, and a fake autoscaling run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.ops.cluster_config import (
    ROOT,
    fake_cluster_config,
    gpu_types,
    load_cluster,
    worker_types,
)
from tests.ops.local_head import client_env, free_port, node_ip, ray_head

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text("utf-8")
FORBIDDEN_AT_BOOT = re.compile(r"git clone|pip3? install|--upgrade|\s-U\b|conda install")


def _prepared() -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(load_cluster())
    validate_config(prepared)
    return prepared


def _pin(requirement_name: str) -> str:
    """The exact version pyproject.toml pins for a package (any extra)."""
    project = PYPROJECT["project"]
    lines = project["dependencies"] + sum(project["optional-dependencies"].values(), [])
    for line in lines:
        requirement = Requirement(line)
        if canonicalize_name(requirement.name) == requirement_name:
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"{line} is not pinned"
            return spec.version
    raise AssertionError(f"{requirement_name} is not in pyproject.toml")


def _dockerfile_arg(name: str) -> str:
    (value,) = re.findall(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.MULTILINE)
    return value


def test_ray_accepts_the_cluster_config():
    prepared = _prepared()  # raises on a schema error or a bad node-type layout
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] == "head"
    assert types["head"]["max_workers"] == 0
    assert set(worker_types(prepared)) == {"cpu_io", "gpu_vlm", "gpu_train"}
    for name, spec in worker_types(prepared).items():
        assert 0 <= spec["min_workers"] <= spec["max_workers"] <= prepared["max_workers"], name
    assert prepared["idle_timeout_minutes"] > 0
    most = sum(spec["max_workers"] for spec in worker_types(prepared).values())
    assert most <= prepared["max_workers"]  # every type can reach its own maximum


def test_nothing_is_installed_or_cloned_at_boot():
    # prepare_config merges Ray's AWS defaults, whose setup_commands `pip install -U ray`
    # unless cluster.yaml replaces them: check the merged commands, not the file
    prepared = _prepared()
    sections = [prepared, *prepared["available_node_types"].values()]
    commands = [c for d in sections for k, v in d.items() if k.endswith("_commands") for c in v]
    offending = [c for c in commands if FORBIDDEN_AT_BOOT.search(c)]
    assert not offending
    assert prepared["setup_commands"] == prepared["worker_setup_commands"] == []
    assert prepared["file_mounts"] == {} and prepared["cluster_synced_files"] == []
    for line in DOCKERFILE.splitlines():
        assert not re.search(r"git clone|--upgrade|\s-U\b", line), line


def test_one_pinned_image_whose_tag_matches_pyproject():
    docker = load_cluster()["docker"]
    assert {"head_image", "worker_image"}.isdisjoint(docker)  # one image for every node
    assert docker["container_name"]
    name, _, tag = docker["image"].rpartition(":")
    assert name.endswith("/caption-factory") and tag not in ("", "latest")
    match = re.fullmatch(
        r"(?P<app>[\d.]+)-ray(?P<ray>[\d.]+)-torch(?P<torch>[\d.]+)-py(?P<py>\d+)", tag
    )
    assert match, tag
    assert match["app"] == PYPROJECT["project"]["version"]
    assert match["ray"] == _pin("ray") == _dockerfile_arg("RAY_VERSION")
    assert match["torch"] == _pin("torch")
    assert f"py{match['py']}" == _dockerfile_arg("PYTHON_TAG")
    python = f"{match['py'][0]}.{match['py'][1:]}"
    assert Requirement(f"python{PYPROJECT['project']['requires-python']}").specifier.contains(
        python
    )
    assert match["app"] in DOCKERFILE and f"torch{match['torch']}" in DOCKERFILE


def test_image_constraints_satisfy_every_pyproject_requirement():
    sys.path.insert(0, str(ROOT / "docker"))
    try:
        import pin
    finally:
        sys.path.remove(str(ROOT / "docker"))
    extras = tuple(_dockerfile_arg("EXTRAS").split(","))
    assert extras == pin.EXTRAS
    lines = (ROOT / "docker" / "constraints.txt").read_text("utf-8").splitlines()
    pinned = dict(line.split("==") for line in lines if line and not line.startswith("#"))
    for requirement in pin.project_roots(extras):
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{name} missing from docker/constraints.txt: python docker/pin.py"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"constraints pin {name}=={pinned[name]}, pyproject.toml wants {requirement}"
        )
    assert pinned["ray"] == _pin("ray") and pinned["torch"] == _pin("torch")


def test_every_node_reads_s3_through_an_instance_profile():
    for name, spec in load_cluster()["available_node_types"].items():
        profile = spec["node_config"]["IamInstanceProfile"]
        arn = profile.get("Arn", "")
        assert re.fullmatch(r"arn:aws:iam::\d{12}:instance-profile/[\w+=,.@-]+", arn), name


def test_gpus_only_on_gpu_types_and_labels_are_valid():
    from ray._private.label_utils import validate_node_labels

    cluster = load_cluster()
    types = cluster["available_node_types"]
    assert types[cluster["head_node_type"]]["resources"] == {"CPU": 0}  # no stage on the head
    assert types["cpu_io"]["resources"].get("GPU", 0) == 0
    assert set(gpu_types(cluster)) == {"gpu_vlm", "gpu_train"}
    assert types["gpu_vlm"]["resources"]["GPU"] == 1 and types["gpu_train"]["resources"]["GPU"] == 8
    for spec in types.values():
        validate_node_labels(spec["labels"])  # raises on a malformed key or value


def _fits(cluster: dict, cpus: float, gpus: float, custom: dict | None = None) -> list[str]:
    asked = {"CPU": cpus, "GPU": gpus, **(custom or {})}
    return [
        name
        for name, spec in worker_types(cluster).items()
        if all(spec["resources"].get(key, 0) >= amount for key, amount in asked.items())
    ]


def _deployments(preset):
    from factory.config_loading import load_config
    from factory.serve.serve_config import DeploymentOptions, ServeConfig

    config = load_config(preset, model=ServeConfig)
    found = [(n, getattr(config, n)) for n in type(config).model_fields]
    return [(n, value) for n, value in found if isinstance(value, DeploymentOptions)]


def test_every_preset_fits_a_node_type():
    from factory.config_loading import load_config
    from factory.pipeline import stage_steps
    from factory.run_config import load_run_config
    from factory.train.train_config import TrainConfig

    cluster, checked = load_cluster(), 0
    for preset in sorted((ROOT / "jobs" / "configs").glob("*.yaml")):
        if preset.name.startswith("train_"):
            scaling = load_config(preset, model=TrainConfig).scaling
            workers = scaling.num_workers
            gpus = workers if scaling.use_gpu else 0
            slots = {k: workers * v for k, v in scaling.custom_resources_per_worker.items()}
            fits = _fits(cluster, workers * scaling.cpus_per_worker, gpus, slots)
            assert fits, preset
            if gpus:
                assert fits == ["gpu_train"], f"{preset.name}: trainers may take a VLM node"
            checked += 1
        elif preset.name.startswith("serve_") and not preset.name.startswith("serve_deploy_"):
            for name, deployment in _deployments(preset):
                fits = _fits(
                    cluster, deployment.num_cpus, deployment.num_gpus, deployment.custom_resources
                )
                assert fits, f"{preset.name}: {name} replicas fit no node type"
                if deployment.num_gpus:
                    assert fits == ["gpu_vlm"], f"{preset.name}: {name} may take a training GPU"
            checked += 1
        elif preset.name.startswith(("caption_", "scale_")):
            config = load_run_config(preset)
            for step in stage_steps(config, resume_from=None):
                res = step.resources
                fits = _fits(cluster, res.num_cpus, res.num_gpus, res.custom_resources)
                assert fits, f"{preset.name}: {step.fn.__name__} fits no node type"
                if res.num_gpus:
                    assert fits == ["gpu_vlm"], f"{preset.name}: {step.fn.__name__} may train"
            for name, spec in config.models.items():
                replica = spec.service
                fits = _fits(cluster, replica.num_cpus, replica.num_gpus, replica.custom_resources)
                assert fits, f"{preset.name}: model {name}'s replicas fit no node type"
                if replica.num_gpus:
                    assert fits == ["gpu_vlm"], f"{preset.name}: model {name} may train"
            checked += 1
    assert checked >= 4


def test_fake_autoscaler_launches_the_node_type_a_stage_asks_for(tmp_path):
    """cluster.yaml's worker types behind Ray's fake multi-node provider: tasks that ask for
    what a CPU stage, a VLM stage and a trainer ask for start one node of each type."""
    cluster = load_cluster()
    demands = [
        # first alone: with only CPU asked for, the autoscaler must pick the CPU type
        {"io_stage": {"num_cpus": 0.5}},  # CHEAP_TASKS; the head advertises no CPU
        {
            # caption_ultra_gpu's model service replicas
            "vlm_stage": {"num_cpus": 2, "num_gpus": 1, "resources": {"vlm_slot": 1}},
            "trainer": {"num_cpus": 8, "num_gpus": 8, "resources": {"train_slot": 8}},
        },
    ]
    port = free_port()
    config_path = tmp_path / "fake.json"
    config_path.write_text(json.dumps(fake_cluster_config(cluster, f"{node_ip()}:{port}")))
    flags = ("--num-cpus=0", "--num-gpus=0", f"--autoscaling-config={config_path}")
    env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    started = time.monotonic()
    with ray_head(*flags, env=env, port=port, timeout=40) as head:
        command = [sys.executable, "-m", "tests.ops.fake_driver", head.gcs_address]
        command += [json.dumps(demands), "40"]  # seconds per group
        driver = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=50, env=client_env()
        )
        assert driver.returncode == 0, driver.stderr[-3000:] + head.log_tail()
    report = json.loads(driver.stdout.strip().splitlines()[-1])
    roles = {name: where["labels"].get("caption-factory/role") for name, where in report.items()}
    assert roles == {"vlm_stage": "vlm-inference", "trainer": "training", "io_stage": "io"}
    assert report["trainer"]["resources"]["GPU"] == 8
    assert time.monotonic() - started < 90
