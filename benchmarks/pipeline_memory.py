"""Peak memory of a validate + dedup run over N images vs 10 x N images.

    .venv/bin/python benchmarks/pipeline_memory.py [--images 400] [--interval 0.2]
        [--set KEY=VALUE ...]

Each run is `run_caption(config)` in a fresh Python process that starts its own local
Ray, with the config of benchmarks/pipeline_throughput.py (`caption=null` and the other
optional stages null: read -> validate -> fingerprint -> dedup -> write). Fresh sessions
make the two runs comparable: both pay Ray's start-up footprint once, and neither
inherits worker processes, object-store pages or driver heap from the other.
This process samples the whole process tree of that driver (Ray's GCS, raylet and
workers are its descendants) every --interval seconds and keeps the largest sum of
PSS, which splits shared pages (the object store, shared libraries) among the processes
that map them, and of RSS, which counts them once per process. Exits 0 whatever the
verdict; PASS/FAIL is on PSS.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import ray  # noqa: F401  (also puts Ray's vendored psutil on the path)
from pipeline_throughput import make_config, make_images

TARGET = 1.2
GIB = 1024**3


@dataclass
class Peak:
    pss: int = 0
    rss: int = 0
    processes: int = 0
    samples: int = 0
    seconds: float = 0.0
    biggest: str = ""  # the largest processes at the PSS peak


def label(process: object) -> str:
    """A short name: Ray's process title (ray::IDLE, ray::MapWorker...), script or program."""
    words = process.cmdline() or [process.name()]
    if words[0].startswith("ray::"):
        return words[0].split("(")[0]
    scripts = [word for word in words if word.endswith(".py")]
    return os.path.basename(scripts[0] if scripts else words[0])


def tree_memory(pid: int) -> tuple[int, int, list[tuple[int, str]]]:
    """(PSS, RSS) summed over `pid` and all its descendants, and each one's (PSS, label)."""
    import psutil

    root = psutil.Process(pid)
    pss = rss = 0
    each = []
    for process in [root, *root.children(recursive=True)]:
        try:
            info = process.memory_full_info()
            each.append((info.pss, label(process)))
        except psutil.Error:  # exited between listing and reading
            continue
        pss, rss = pss + info.pss, rss + info.rss
    return pss, rss, each


def watch(command: list[str], log_path: str, interval: float) -> Peak:
    """Run `command`, sampling its process tree until it exits; fail loudly if it fails."""
    import psutil

    peak, started = Peak(), time.perf_counter()
    with open(log_path, "w") as log:
        child = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        while child.poll() is None:
            try:
                pss, rss, each = tree_memory(child.pid)
            except psutil.NoSuchProcess:
                break
            if pss > peak.pss:
                peak.pss, peak.processes = pss, len(each)
                peak.biggest = ", ".join(f"{n} {b / 2**20:.0f}" for b, n in sorted(each)[::-1][:6])
            peak.rss, peak.samples = max(peak.rss, rss), peak.samples + 1
            time.sleep(interval)
    peak.seconds = time.perf_counter() - started
    if child.wait() != 0:
        with open(log_path) as log:
            raise RuntimeError(f"run failed (exit {child.returncode}):\n{log.read()[-3000:]}")
    return peak


def write_manifest(path: str, images: str, count: int) -> str:
    names = sorted(os.listdir(images))[:count]
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["uri"])
        writer.writerows([os.path.join(images, name)] for name in names)
    return path


def measure(scratch: str, images: str, count: int, args: argparse.Namespace) -> Peak:
    manifest = write_manifest(os.path.join(scratch, f"first-{count}.csv"), images, count)
    output = os.path.join(scratch, f"out-{count}")
    command = [sys.executable, __file__, "--run-one", manifest, output, *_sets(args)]
    peak = watch(command, os.path.join(scratch, f"run-{count}.log"), args.interval)
    print(
        f"  {count:>6} images: peak PSS {peak.pss / GIB:5.2f} GiB, peak RSS "
        f"{peak.rss / GIB:5.2f} GiB ({peak.processes} processes at the PSS peak), "
        f"{peak.seconds:5.1f} s, {peak.samples} samples\n    largest at the peak (PSS MiB): "
        f"{peak.biggest}",
        flush=True,
    )
    return peak


def _sets(args: argparse.Namespace) -> list[str]:
    return [part for value in args.overrides for part in ("--set", value)]


def run_one(manifest: str, output: str, overrides: list[str]) -> int:
    """The measured process: a fresh local Ray, started by run_caption itself."""
    from factory.runner import run_caption, summary_text

    print(summary_text(run_caption(make_config(manifest, output, overrides))))
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=400, help="N; the large run has 10 N")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config KEY=VALUE"
    )
    parser.add_argument("--run-one", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    if args.run_one:
        return run_one(*args.run_one, args.overrides)
    with tempfile.TemporaryDirectory(prefix="caption-memory-") as scratch:
        images = os.path.join(scratch, "images")
        make_images(images, 10 * args.images)
        small = measure(scratch, images, args.images, args)
        large = measure(scratch, images, 10 * args.images, args)
    pss, rss = large.pss / small.pss, large.rss / small.rss
    print(f"overrides {args.overrides or 'none'}; sampled every {args.interval} s")
    print(f"peak PSS 10N/N: {pss:.2f}  (target <= {TARGET})  {'PASS' if pss <= TARGET else 'FAIL'}")
    print(f"peak RSS 10N/N: {rss:.2f}  (RSS counts shared pages once per process)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
