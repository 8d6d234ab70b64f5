"""Driver for the fake-cluster test: ask for resources, report where each task ran.

    python -m tests.ops.fake_driver ADDRESS DEMANDS_JSON TIMEOUT_S

DEMANDS_JSON is a list of groups; a group maps a name to a task's resource request
({"num_cpus": 1, "num_gpus": 8, "resources": {"train_slot": 8}}). Each group's tasks are
submitted together, against a cluster that has no room for them, so only the autoscaler
can place them; the next group starts when they are done. Prints one JSON object:
name -> the labels and resources of the node the task ran on. Runs in its own process so
that it never shares Ray state with the pytest process.
"""

from __future__ import annotations

import json
import sys

import ray


@ray.remote
def where() -> str:
    return ray.get_runtime_context().get_node_id()


def main(address: str, demands_json: str, timeout: float) -> int:
    ray.init(address=address, log_to_driver=False)
    node_ids: dict[str, str] = {}
    for group in json.loads(demands_json):
        refs = {name: where.options(**demand).remote() for name, demand in group.items()}
        node_ids |= dict(zip(refs, ray.get(list(refs.values()), timeout=timeout), strict=True))
    nodes = {node["NodeID"]: node for node in ray.nodes()}
    report = {
        name: {"labels": nodes[node_id]["Labels"], "resources": nodes[node_id]["Resources"]}
        for name, node_id in node_ids.items()
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
