"""Scale: 10k and 100k small images through the CPU stages, via the real `run_caption`.

    .venv/bin/python benchmarks/scale.py [--sizes 10000,100000] [--images /tmp/caption-scale]
        [--interval 1] [--set KEY=VALUE ...]
    .venv/bin/python benchmarks/scale.py --index-only [--sizes 100000,1000000] [--shards 4]

Inputs: 64x48 PNGs of random shapes (benchmarks/caption_throughput.py's picture generator,
re-encoded losslessly), 2 % exact duplicates, generated once into --images (outside the
repository; reused by later runs) in folders of 1000, and listed through a CSV manifest of
the first N. Stages: read -> validate -> fingerprint -> dedup -> write (`caption`, `ocr`,
`knowledge`, `health` and every other optional stage null; clip/detect have no model).

Each size runs `run_caption(config)` in a fresh process with its own local Ray (started
before the clock, so throughput covers listing, the plan and the stream, not `ray.init`).
This process samples that driver's process tree every --interval s: the driver's RSS,
the Ray workers' (every `ray::` process: tasks, the dedup actor, Ray Data's helpers) RSS,
summed and the largest one, Ray's own daemons (GCS, raylet, dashboard agents), and the
tree's PSS (shared object-store pages counted once). The driver also samples the object
store (used bytes) and reports Ray's spill and restore totals at the end. Dedup: the
dedup stage's seconds per image (summed over its tasks, waits for listing order
included), and the index shards (`ray::DedupShard` processes): their largest RSS and their
CPU seconds per image.

`--index-only` measures the index alone, in this process: `--shards` IndexShards filled
with N accepted images (random hashes, 64-character URIs): bytes per image per shard
(tracemalloc), query CPU-us per image over all shards, and from those a projection to 10M
and 100M images (memory per shard, shards needed for 4 GiB each). Exits 0.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

from PIL import Image

MIB = 2**20
DUPLICATE_EVERY = 50  # every 50th image is a byte copy of the one 3 before: 2 % exact


def png_picture(seed: int) -> bytes:
    from caption_throughput import picture

    image = Image.open(io.BytesIO(picture(seed, side=64)))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def image_path(folder: str, index: int) -> str:
    return os.path.join(folder, f"d{index // 1000:03d}", f"img-{index:06d}.png")


def write_range(folder: str, start: int, stop: int) -> None:
    for index in range(start, stop):
        path = image_path(folder, index)
        if os.path.exists(path):
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        source = index - 3 if index and index % DUPLICATE_EVERY == 0 else index
        with open(path + ".tmp", "wb") as file:
            file.write(png_picture(source))
        os.replace(path + ".tmp", path)


def make_images(folder: str, count: int) -> None:
    """Images 0..count-1 under folder (existing ones kept), on every core."""
    step = 1000
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        jobs = [
            pool.submit(write_range, folder, s, min(s + step, count)) for s in range(0, count, step)
        ]
        for job in jobs:
            job.result()


def write_manifest(path: str, folder: str, count: int) -> str:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["uri"])
        writer.writerows([image_path(folder, index)] for index in range(count))
    return path


class StoreSampler(threading.Thread):
    """Peak object-store use, sampled in the driver while the run streams."""

    def __init__(self, interval: float):
        super().__init__(daemon=True)
        self.interval, self.peak_used, self.stopped = interval, 0, threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            self.peak_used = max(self.peak_used, store_stats()["object_store_bytes_used"])


def store_stats() -> dict[str, float]:
    import ray
    from ray._private.internal_api import get_memory_info_reply, get_state_from_address

    address = ray.get_runtime_context().gcs_address  # other Rays may run on this machine
    stats = get_memory_info_reply(get_state_from_address(address)).store_stats
    names = ("object_store_bytes_used", "spilled_bytes_total", "spilled_objects_total")
    names += ("restored_bytes_total", "object_store_bytes_fallback")
    return {name: getattr(stats, name) for name in names}


def run_one(manifest: str, output: str, overrides: list[str], interval: float) -> int:
    """The measured process: Ray first (off the clock), then run_caption on the clock."""
    import ray
    from pipeline_throughput import make_config

    from factory.runner import run_caption

    config = make_config(manifest, output, overrides)
    # "local": a new Ray of its own, even when a `ray start` cluster runs on this machine
    # (ray.init() with no address would join the one in /tmp/ray/ray_current_cluster)
    ray.init(
        address="local",
        num_cpus=config.ray.num_cpus,
        include_dashboard=False,
        log_to_driver=False,
    )
    ray.data.DataContext.get_current().enable_progress_bars = False
    sampler = StoreSampler(interval)
    sampler.start()
    started = time.perf_counter()
    result = run_caption(config)
    seconds = time.perf_counter() - started
    sampler.stopped.set()
    final = store_stats()
    report = {
        "seconds": seconds,
        "counts": vars(result.counts),
        "stage_seconds": result.stage_seconds,
        "peak_store_bytes": max(sampler.peak_used, final["object_store_bytes_used"]),
        **final,
    }
    print("RESULT " + json.dumps(report), flush=True)
    return 0


@dataclass
class Peaks:
    driver_rss: int = 0
    workers_rss: int = 0  # sum over ray:: processes
    largest_worker_rss: int = 0
    workers: int = 0  # ray:: processes at the workers' peak
    daemons_rss: int = 0  # gcs_server, raylet, agents, monitor...
    tree_pss: int = 0
    samples: int = 0
    sampling_seconds: float = 0.0  # this process's own cost, CPU taken from the run
    cpu_seconds: dict = field(default_factory=dict)  # pid -> last seen CPU time (the run's)
    shard_rss: int = 0  # the largest dedup index shard
    shards: int = 0
    shard_cpu: dict = field(default_factory=dict)  # shard pid -> last seen CPU time


def sample(root_pid: int, peaks: Peaks) -> None:
    import psutil
    from pipeline_memory import label

    started = time.process_time()
    root = psutil.Process(root_pid)
    workers, daemons, pss, driver = [], 0, 0, 0
    for process in [root, *root.children(recursive=True)]:
        try:
            info = process.memory_full_info()
            name = label(process)
            times = process.cpu_times()
        except psutil.Error:  # exited between listing and reading
            continue
        peaks.cpu_seconds[process.pid] = times.user + times.system
        pss += info.pss
        if process.pid == root_pid:
            driver = info.rss
        elif name.startswith("ray::"):
            workers.append(info.rss)
            if name.startswith("ray::DedupShard"):
                peaks.shard_cpu[process.pid] = times.user + times.system
                peaks.shard_rss = max(peaks.shard_rss, info.rss)
                peaks.shards = len(peaks.shard_cpu)
        else:
            daemons += info.rss
    peaks.driver_rss = max(peaks.driver_rss, driver)
    if sum(workers) > peaks.workers_rss:
        peaks.workers_rss, peaks.workers = sum(workers), len(workers)
    peaks.largest_worker_rss = max([peaks.largest_worker_rss, *workers])
    peaks.daemons_rss = max(peaks.daemons_rss, daemons)
    peaks.tree_pss = max(peaks.tree_pss, pss)
    peaks.samples += 1
    peaks.sampling_seconds += time.process_time() - started


def measure(scratch: str, images: str, count: int, args: argparse.Namespace) -> dict:
    import psutil

    manifest = write_manifest(os.path.join(scratch, f"first-{count}.csv"), images, count)
    output = os.path.join(scratch, f"out-{count}")
    sets = [part for value in args.overrides for part in ("--set", value)]
    command = [sys.executable, __file__, "--run-one", manifest, output, *sets]
    command += ["--interval", str(args.interval)]
    peaks, log_path = Peaks(), os.path.join(scratch, f"run-{count}.log")
    busy_before, wall_before = machine_busy_seconds(), time.monotonic()
    with open(log_path, "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        while child.poll() is None:
            try:
                sample(child.pid, peaks)
            except psutil.NoSuchProcess:
                break
            time.sleep(args.interval)
    with open(log_path) as log:
        text = log.read()
    if child.wait() != 0 or "RESULT " not in text:
        raise RuntimeError(f"run of {count} failed (exit {child.returncode}):\n{text[-3000:]}")
    result = json.loads(text.split("RESULT ", 1)[1].splitlines()[0])
    wall = time.monotonic() - wall_before
    others = machine_busy_seconds() - busy_before - sum(peaks.cpu_seconds.values())
    share = max(0.0, others) / (wall * (os.cpu_count() or 1))
    peaks_out = {k: v for k, v in asdict(peaks).items() if k not in ("cpu_seconds", "shard_cpu")}
    peaks_out["shard_cpu_seconds"] = sum(peaks.shard_cpu.values())
    return {"images": count, **result, "peaks": peaks_out, "others_cpu_share": share}


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used (not idle, not waiting on IO)."""
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def describe(run: dict) -> str:
    peaks, counts = run["peaks"], run["counts"]
    return (
        f"{run['images']:>7} images: {run['seconds']:7.1f} s, "
        f"{run['images'] / run['seconds']:6.1f} images/s, "
        f"{1000 * run['seconds'] / run['images']:.2f} ms/image | accepted {counts['accepted']}, "
        f"duplicates {counts['duplicates']}, rejected {counts['rejected']}\n"
        f"    peak RSS: driver {peaks['driver_rss'] / MIB:.0f} MiB, Ray workers "
        f"{peaks['workers_rss'] / MIB:.0f} MiB ({peaks['workers']} processes, largest "
        f"{peaks['largest_worker_rss'] / MIB:.0f} MiB), Ray daemons "
        f"{peaks['daemons_rss'] / MIB:.0f} MiB; tree PSS {peaks['tree_pss'] / MIB:.0f} MiB; "
        f"{peaks['samples']} samples ({peaks['sampling_seconds']:.1f} CPU-s spent sampling)\n"
        f"    object store: peak used {run['peak_store_bytes'] / MIB:.1f} MiB, spilled "
        f"{run['spilled_bytes_total'] / MIB:.1f} MiB in {run['spilled_objects_total']} objects, "
        f"restored {run['restored_bytes_total'] / MIB:.1f} MiB, fallback "
        f"{run['object_store_bytes_fallback'] / MIB:.1f} MiB\n"
        f"    dedup: stage {dedup_ms(run):.3f} ms/image (summed over tasks, waits included); "
        f"index {peaks['shards']} shards, largest RSS {peaks['shard_rss'] / MIB:.0f} MiB, "
        f"{1000 * peaks['shard_cpu_seconds'] / run['images']:.3f} CPU-ms/image over all shards\n"
        f"    CPU share taken by other processes during the run: "
        f"{100 * run['others_cpu_share']:.0f} %\n"
        f"    stage seconds (summed over workers): "
        + ", ".join(f"{k} {v:.1f}" for k, v in sorted(run["stage_seconds"].items()))
    )


def dedup_ms(run: dict) -> float:
    return 1000 * run["stage_seconds"].get("dedup", 0.0) / run["images"]


def index_only(sizes: list[int], shards: int) -> None:
    """The index alone: memory per image per shard and query cost, then a projection."""
    import pickle
    import random
    import tracemalloc

    from factory.dedup.shard import Entry, IndexShard

    rng = random.Random(0)
    per_image = {}
    for size in sizes:
        tracemalloc.start()
        index = [IndexShard(6, shard, shards) for shard in range(shards)]
        for start in range(0, size, 10_000):
            batch = [
                Entry(
                    f"s3://museum-bucket/collection/{i // 1000:06d}/object-{i:012d}.jpg"[:64],
                    f"{rng.getrandbits(256):064x}",
                    rng.getrandbits(64),
                )
                for i in range(start, min(start + 10_000, size))
            ]
            for shard in index:  # each shard its own copy, as each actor unpickles its own
                shard.add(pickle.loads(pickle.dumps(batch)))
        held = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        queries = [
            Entry(f"q{i}", f"{rng.getrandbits(256):064x}", rng.getrandbits(64)) for i in range(2000)
        ]
        started = time.process_time()
        for shard in index:
            shard.query(queries)
        query_us = (time.process_time() - started) * 1e6 / len(queries)
        per_image[size] = held / size
        print(
            f"{size:>10} images, {shards} shards: {held / size:.0f} B/image in all "
            f"({held / size / shards:.0f} per shard), largest shard {held / shards / MIB:.1f} MiB; "
            f"query {query_us:.1f} CPU-us/image over all shards"
        )
    small, large = min(sizes), max(sizes)
    # past the first images the band tables' buckets exist: the marginal cost is what grows
    cost = (per_image[large] * large - per_image[small] * small) / (large - small or 1)
    print(f"marginal {cost:.0f} B/image over all shards ({small:,} -> {large:,} images)")
    for target in (10_000_000, 100_000_000):
        total = cost * target
        needed = max(1, -(-int(total) // (4 * 1024 * MIB)))
        print(
            f"projection {target:>11,} images: {total / 1024 / MIB:.1f} GiB of index; "
            f"{needed} shards of <= 4 GiB ({total / needed / 1024 / MIB:.2f} GiB each)"
        )


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated image counts")
    parser.add_argument("--images", default="/tmp/caption-scale", help="generated images here")
    parser.add_argument("--scratch", default="/tmp/caption-scale-runs", help="outputs, logs")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config KEY=VALUE"
    )
    parser.add_argument("--run-one", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--index-only", action="store_true", help="the dedup index alone")
    parser.add_argument("--shards", type=int, default=4, help="index shards (--index-only)")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.run_one:
        return run_one(*args.run_one, args.overrides, args.interval)
    sizes = [int(size) for size in args.sizes.split(",")]
    if args.index_only:
        index_only(sizes, args.shards)
        return 0
    started = time.perf_counter()
    make_images(args.images, max(sizes))
    print(f"{max(sizes)} images ready in {args.images} ({time.perf_counter() - started:.0f} s)")
    os.makedirs(args.scratch, exist_ok=True)
    runs = []
    for size in sizes:
        subprocess.run(["rm", "-rf", os.path.join(args.scratch, f"out-{size}")], check=True)
        runs.append(measure(args.scratch, args.images, size, args))
        print(describe(runs[-1]), flush=True)
    small, large = runs[0], runs[-1]
    per_image = (large["seconds"] / large["images"]) / (small["seconds"] / small["images"])
    print(f"per-image time {large['images']} vs {small['images']}: {per_image:.2f}x (linear: 1.0)")
    if large["images"] > small["images"]:
        # the extra images' cost: fixed start-up costs (executor, actors, workers) cancel out
        extra = (large["seconds"] - small["seconds"]) / (large["images"] - small["images"])
        print(f"marginal ms/image beyond the first {small['images']}: {1000 * extra:.2f}")
    if dedup_ms(small):
        ratio = dedup_ms(large) / dedup_ms(small)
        print(f"dedup stage time per image {large['images']} vs {small['images']}: {ratio:.2f}x")
    shard_ms = [1000 * run["peaks"]["shard_cpu_seconds"] / run["images"] for run in (small, large)]
    if shard_ms[0]:
        ratio = shard_ms[1] / shard_ms[0]
        print(f"index CPU per image {large['images']} vs {small['images']}: {ratio:.2f}x")
    for key in ("driver_rss", "workers_rss", "tree_pss"):
        print(f"peak {key} ratio: {large['peaks'][key] / small['peaks'][key]:.2f}x (flat: 1.0)")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(runs, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
