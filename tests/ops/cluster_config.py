"""cluster.yaml as data: loading it, and translating its node types for a fake cluster.

The fake multi-node provider (`provider: type: fake_multinode`) starts a raylet per
"node" on this machine with the node type's resources and labels; GPUs are advertised as
the GPU resource (Ray schedules on the count, no device is needed). Counts are kept as
cluster.yaml has them so that what fits there fits here; node counts are capped so a test
launches at most one node per type.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER_YAML = ROOT / "cluster.yaml"
FAKE_HEAD = "ray.head.default"  # the head type name the fake provider tags its head with
OBJECT_STORE = 80 * 2**20  # per fake node: Ray's minimum; nothing large is stored


def load_cluster() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text("utf-8"))


def worker_types(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    head = cluster["head_node_type"]
    return {k: v for k, v in cluster["available_node_types"].items() if k != head}


def gpu_types(cluster: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in worker_types(cluster).items() if v["resources"].get("GPU", 0)}


def fake_cluster_config(cluster: dict[str, Any], gcs_address: str) -> dict[str, Any]:
    """An autoscaling config for the fake provider with cluster.yaml's worker types."""
    head = cluster["available_node_types"][cluster["head_node_type"]]
    types: dict[str, Any] = {
        FAKE_HEAD: {"resources": dict(head["resources"]), "node_config": {}, "max_workers": 0}
    }
    for name, spec in worker_types(cluster).items():
        types[name] = {
            "resources": {**spec["resources"], "object_store_memory": OBJECT_STORE},
            "labels": dict(spec.get("labels", {})),
            "node_config": {},
            "min_workers": 0,
            "max_workers": min(1, spec.get("max_workers", 1)),
        }
    return {
        "cluster_name": cluster["cluster_name"] + "-fake",
        "max_workers": len(types) - 1,
        "upscaling_speed": cluster.get("upscaling_speed", 1.0),
        "idle_timeout_minutes": cluster["idle_timeout_minutes"],
        # the fake provider's nodes are raylets, not machines: nothing to ssh into and set
        # up, so the autoscaler's node updaters (which would tag nodes) stay off
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {"ssh_user": "ubuntu"},
        "docker": {},
        "head_node_type": FAKE_HEAD,
        "available_node_types": copy.deepcopy(types),
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }
