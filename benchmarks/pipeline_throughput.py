"""Throughput of validate + dedup: Ray Data vs a single-process loop over the same stages.

    .venv/bin/python benchmarks/pipeline_throughput.py [--images 4000] [--repeats 2]
        [--set KEY=VALUE ...] [--ray-defaults]

Both sides run the caption pipeline with `caption=null` and every other optional stage
null too (ocr, knowledge, ...), i.e. read -> validate -> fingerprint -> dedup -> write,
over the same generated 800x600 JPEGs (4 % exact duplicates). The Ray side is
`run_caption(config)`; the loop side builds each stage callable of `stage_steps(config)`
and a ShardWriter once and feeds them pyarrow slices of the listing table at the batch
sizes the config gives each stage. Fairness:
- Ray start-up is excluded: Ray is started and a warm-up pipeline run before timing;
- runs are interleaved (loop, ray, loop, ray, ...) and medians compared;
- before each run the script waits (up to --quiet-wait s) for other processes on the
  machine to go idle, and prints how busy the machine was;
- Ray workers run at the driver's niceness (RAY_worker_niceness=0 unless set): Ray's
  default, 15, makes them lose every core to other tenants of a shared machine while
  the loop competes at 0.
`--set` passes config overrides (e.g. `--set ray.preserve_order=false`) to both sides.
Ray is started by the warm-up `run_caption`, i.e. with the runner's settings for a local
Ray (`factory.runner.local_ray_settings`); `--ray-defaults` starts it with Ray's defaults
instead, to compare. CPU-ms per image: the loop's process CPU time; Ray's, every process
of the driver's tree (GCS, raylet, workers, including exited workers the raylet reaped).
Exits 0 whatever the verdict.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import typing
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat

import numpy as np
import pyarrow as pa
import ray
import ray.data
from PIL import Image, ImageDraw

from factory import __version__
from factory.io.listing import list_inputs
from factory.io.outputs import ShardWriter
from factory.pipeline import captions_schema, stage_steps
from factory.run_config import CaptionRunConfig, load_run_config
from factory.runner import run_caption
from factory.stage_kit.contract import StageConfig

TARGET = 1.5  # issue #18: Ray >= 1.5x the loop on 2 cores
OVERHEAD_TARGET_MS = 1.5  # Ray's CPU-ms per image over the loop's
WIDTH, HEIGHT = 800, 600
DUPLICATE_EVERY = 25  # every 25th image is a byte copy of an earlier one: 4 % duplicates


def draw_picture(seed: int) -> Image.Image:
    """A distinct picture: a gradient background, random shapes and sensor-like noise."""
    rng = np.random.default_rng(seed)
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0.0, 1.0, HEIGHT)[:, None, None]
    pixels = np.broadcast_to(top + (bottom - top) * ramp, (HEIGHT, WIDTH, 3))
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(4, 12)):
        x0, y0 = int(rng.integers(0, WIDTH - 50)), int(rng.integers(0, HEIGHT - 50))
        box = (x0, y0, x0 + int(rng.integers(30, 400)), y0 + int(rng.integers(30, 300)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse, draw.rectangle)[int(rng.integers(0, 2))](box, fill=colour)
    noise = rng.integers(-8, 9, (HEIGHT, WIDTH, 3), dtype=np.int16)
    return Image.fromarray(np.clip(np.asarray(image, np.int16) + noise, 0, 255).astype(np.uint8))


def write_picture(folder: str, index: int, seed: int) -> None:
    """img-INDEX.jpg; every DUPLICATE_EVERY-th one is a byte copy of the one 7 before."""
    source = index - 7 if index and index % DUPLICATE_EVERY == 0 else index
    data = io.BytesIO()
    draw_picture(seed * 1_000_003 + source).save(data, "JPEG", quality=90)
    with open(os.path.join(folder, f"img-{index:06d}.jpg"), "wb") as file:
        file.write(data.getvalue())


def make_images(folder: str, count: int, seed: int = 0) -> None:
    """`count` JPEGs in `folder`, deterministic, about 4 % exact duplicates; uses all cores."""
    os.makedirs(folder, exist_ok=True)
    with ProcessPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(write_picture, repeat(folder), range(count), repeat(seed), chunksize=64))


def optional_stages_off() -> list[str]:
    """`caption=null` and `name=null` for every other optional stage (ocr, knowledge, ...),
    so only read -> validate -> fingerprint -> dedup -> write run, whatever the defaults."""
    off = []
    for name, field in CaptionRunConfig.model_fields.items():
        kinds = typing.get_args(field.annotation)
        if type(None) in kinds and any(_is_stage_config(kind) for kind in kinds):
            off.append(f"{name}=null")
    return off


def _is_stage_config(kind: object) -> bool:
    return isinstance(kind, type) and issubclass(kind, StageConfig)


def make_config(images: str, output: str, overrides: list[str]) -> CaptionRunConfig:
    base = [*optional_stages_off(), f"input={images}", f"output={output}"]
    return load_run_config(None, [*base, *overrides])


def slices(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(start, size) for start in range(0, table.num_rows, size)]


def run_loop(config: CaptionRunConfig) -> int:
    """The same stage callables in one process: each built once, batch sizes from config."""
    table = list_inputs(config.input, tuple(e.lower() for e in config.extensions)).table
    steps = stage_steps(config, None)
    # one process: dedup keeps its whole index in the stage (no shards to talk to)
    kwargs = [{**s.kwargs, "index": None} if "index" in s.kwargs else s.kwargs for s in steps]
    stages = [(s.fn(**k), s.resources.batch_size) for s, k in zip(steps, kwargs, strict=True)]
    writer = ShardWriter(
        output=config.output,
        captions_schema=captions_schema(steps),
        run_id="loop",
        factory_version=__version__,
        compression=config.output_options.compression,
    )
    for shard in slices(table, config.output_options.rows_per_shard):
        for stage, batch_size in stages:
            shard = pa.concat_tables([stage(part) for part in slices(shard, batch_size)])
        writer(shard)
    return table.num_rows


def run_ray(config: CaptionRunConfig) -> int:
    counts = run_caption(config).counts
    assert counts.accepted + counts.duplicates + counts.rejected == counts.inputs, counts
    return counts.inputs


def wait_for_quiet(max_seconds: float, busy_below: float = 15.0) -> float:
    """Wait until the machine's CPUs are < busy_below % busy for 1 s; return the last %."""
    import psutil  # Ray vendors psutil: importable once ray is

    deadline = time.monotonic() + max_seconds
    busy = psutil.cpu_percent(interval=1.0)
    while busy >= busy_below and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=1.0)
    return busy


def tree_cpu_seconds() -> dict[str, float]:
    """CPU seconds of this process and its descendants by process kind (Ray's title, or the
    program), with the children each reaped (exited workers count under the raylet)."""
    import psutil
    from pipeline_memory import label

    root = psutil.Process()
    by_kind: dict[str, float] = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            kind = "driver" if process.pid == root.pid else label(process)
        except psutil.Error:  # exited between listing and reading
            continue
        reaped = times.children_user + times.children_system
        by_kind[kind] = by_kind.get(kind, 0.0) + times.user + times.system
        if reaped:
            by_kind[f"{kind} (exited children)"] = (
                by_kind.get(f"{kind} (exited children)", 0.0) + reaped
            )
    return by_kind


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0) > 0}


def timed(
    side: str, images: str, scratch: str, args: argparse.Namespace, attempt: int
) -> tuple[float, float]:
    """(images per second, CPU-ms per image) of one run, into a fresh output folder."""
    output = os.path.join(scratch, f"out-{side}-{attempt}")
    config = make_config(images, output, args.overrides)
    busy = wait_for_quiet(args.quiet_wait)
    cpu, started = tree_cpu_seconds(), time.perf_counter()
    count = (run_loop if side == "loop" else run_ray)(config)
    rate = count / (time.perf_counter() - started)
    spent = cpu_delta(cpu, tree_cpu_seconds())
    cpu_ms = sum(spent.values()) * 1000 / count
    print(
        f"  run {attempt} {side:>4}: {rate:6.1f} images/s  {cpu_ms:5.2f} CPU-ms/image"
        f"   (CPUs {busy:.0f} % busy before)"
    )
    if side == "ray":  # where Ray's CPU went, per image
        top = sorted(spent.items(), key=lambda item: -item[1])[:8]
        print("      " + ", ".join(f"{kind} {1000 * s / count:.2f}" for kind, s in top))
    shutil.rmtree(output)
    return rate, cpu_ms


def start_ray(scratch: str, overrides: list[str], ray_defaults: bool) -> None:
    """Start Ray as run_caption does (or with Ray's defaults), then warm it up."""
    os.environ.setdefault("RAY_worker_niceness", "0")
    config = make_config(os.path.join(scratch, "warmup"), os.path.join(scratch, "w"), overrides)
    make_images(config.input, 256, seed=99)
    if ray_defaults:
        ray.init(num_cpus=config.ray.num_cpus, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    run_caption(config)  # starts Ray with the runner's settings unless started above


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=4000, help="generated inputs")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per side (>= 2)")
    parser.add_argument("--quiet-wait", type=float, default=30.0, help="seconds, per run")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config KEY=VALUE"
    )
    parser.add_argument(
        "--ray-defaults", action="store_true", help="start Ray with Ray's own settings"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="caption-bench-") as scratch:
        images = os.path.join(scratch, "images")
        make_images(images, args.images)
        start_ray(scratch, args.overrides, args.ray_defaults)
        runs: dict[str, list[tuple[float, float]]] = {"loop": [], "ray": []}
        for attempt in range(max(2, args.repeats)):
            for side in runs:
                runs[side].append(timed(side, images, scratch, args, attempt))
    rates = {side: statistics.median(r for r, _ in values) for side, values in runs.items()}
    cpu = {side: statistics.median(c for _, c in values) for side, values in runs.items()}
    report(args, rates, cpu)
    return 0


def report(args: argparse.Namespace, median: dict[str, float], cpu: dict[str, float]) -> None:
    steps = stage_steps(make_config("in", "out", args.overrides), None)
    ratio = median["ray"] / median["loop"]
    settings = "Ray defaults" if args.ray_defaults else "runner's local Ray settings"
    print(f"images {args.images}, CPUs {os.cpu_count()}, overrides {args.overrides or 'none'}")
    print(f"ray started with: {settings}")
    print("stages: " + " -> ".join([s.fn.COLUMNS.stage for s in steps] + ["write"]))
    print(f"loop (1 process): {median['loop']:6.1f} images/s, {cpu['loop']:.2f} CPU-ms/image")
    print(f"ray data        : {median['ray']:6.1f} images/s, {cpu['ray']:.2f} CPU-ms/image")
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(f"ratio ray/loop  : {ratio:.2f}x  (target >= {TARGET}x)  {verdict}")
    overhead = cpu["ray"] - cpu["loop"]
    verdict = "PASS" if overhead <= OVERHEAD_TARGET_MS else "FAIL"
    print(
        f"ray overhead    : {overhead:+.2f} CPU-ms/image (target <= {OVERHEAD_TARGET_MS}) {verdict}"
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
