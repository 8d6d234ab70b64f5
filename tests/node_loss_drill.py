"""The node-loss drill, run in its own process: `python -m tests.node_loss_drill IN OUT REPORT`.

A `ray.cluster_utils.Cluster` with a CPU-less head (the driver's node) and two 2-CPU
worker nodes runs a caption job over IN; once the first shards are written, one worker
node is killed without warning. Writes REPORT, a JSON file: whether a node was lost
mid-run, and the job's counts. A file, not stdout: Ray's own processes may print to the
driver's stdout at any time, so the last line there is not ours to claim.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

import ray
from ray.cluster_utils import Cluster

from factory.run_config import load_run_config
from factory.runner import run_caption

SLOW = "tests.drill_engines:SlowEngine"


def main(inputs: str, output: str, report: str) -> None:
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    doomed = cluster.add_node(num_cpus=2)
    cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    config = load_run_config(
        None,
        [
            f"input={inputs}",
            f"output={output}",
            f"ray.address={cluster.address}",
            "ocr=null",
            "health=null",
            f"caption.engine.kind={SLOW}",
            "caption.engine.model=drill",
            "caption.styles={detailed: caption_fusion}",
            "caption.resources.concurrency=2",
            "caption.resources.batch_size=4",
            "caption.resources.num_cpus=0.5",
            "output_options.rows_per_shard=4",
            "ray.rows_per_block=8",
        ],
    )
    finished = threading.Event()
    lost_mid_run = False

    def kill_when_shards_appear() -> None:
        nonlocal lost_mid_run
        captions = os.path.join(output, "captions")
        while not finished.is_set():
            if os.path.isdir(captions) and len(os.listdir(captions)) >= 2:
                cluster.remove_node(doomed, allow_graceful=False)
                lost_mid_run = not finished.is_set()
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_when_shards_appear)
    killer.start()
    try:
        result = run_caption(config)
    finally:
        finished.set()
        killer.join()
    with open(report, "w", encoding="utf-8") as file:
        json.dump({"lost_mid_run": lost_mid_run, "counts": vars(result.counts)}, file)
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
