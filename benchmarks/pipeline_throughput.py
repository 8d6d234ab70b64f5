"""Throughput of validate + dedup: Ray Data vs a single-process loop over the same stages.

    .venv/bin/python benchmarks/pipeline_throughput.py [--images 1200] [--repeats 2]
        [--set KEY=VALUE ...]

Both sides run the caption pipeline with `caption=null` (read -> validate -> fingerprint
-> dedup -> write) over the same generated JPEGs. The Ray side is `run_caption(config)`;
the loop side constructs each stage callable of `stage_steps(config)` and a ShardWriter
once and feeds them pyarrow slices of the listing table, at the batch sizes the config
gives each stage. Ray start-up is excluded: Ray is started and a small warm-up pipeline
run before any timing. Runs are interleaved (loop, ray, loop, ray, ...) because these
machines are noisy, and medians are compared. `--set` passes config overrides (e.g.
`--set ray.preserve_order=false`) to both sides. Exits 0 whatever the verdict.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from factory import __version__
from factory.config import CaptionRunConfig, load_config
from factory.io.listing import list_inputs
from factory.io.outputs import ShardWriter
from factory.pipeline import captions_schema, stage_steps
from factory.runner import run_caption

TARGET = 1.7
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
        shape = (draw.ellipse, draw.rectangle, draw.chord)[int(rng.integers(0, 3))]
        shape(box, fill=colour, **({"start": 0, "end": 200} if shape == draw.chord else {}))
    noise = rng.normal(0.0, 6.0, (HEIGHT, WIDTH, 3))
    noisy = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(noisy)


def make_images(folder: str, count: int, seed: int = 0) -> None:
    """`count` JPEGs in `folder`, deterministic; every DUPLICATE_EVERY-th repeats one."""
    os.makedirs(folder, exist_ok=True)
    for index in range(count):
        path = os.path.join(folder, f"img-{index:06d}.jpg")
        if index and index % DUPLICATE_EVERY == 0:
            with open(os.path.join(folder, f"img-{index // 2:06d}.jpg"), "rb") as original:
                data = original.read()
            with open(path, "wb") as copy:
                copy.write(data)
        else:
            draw_picture(seed * 1_000_003 + index).save(path, "JPEG", quality=90)


def make_config(images: str, output: str, overrides: list[str]) -> CaptionRunConfig:
    return load_config(None, ["caption=null", f"input={images}", f"output={output}", *overrides])


def slices(table: pa.Table, size: int) -> list[pa.Table]:
    return [table.slice(start, size) for start in range(0, table.num_rows, size)]


def run_loop(config: CaptionRunConfig) -> int:
    """The same stage callables in one process: each built once, batch sizes from config."""
    table = list_inputs(config.input, tuple(config.extensions)).table
    steps = stage_steps(config, None)
    stages = [(step.fn(**step.kwargs), step.resources.batch_size) for step in steps]
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
    result = run_caption(config)
    counts = result.counts
    assert counts.accepted + counts.duplicates + counts.rejected == counts.inputs, counts
    return counts.inputs


def timed(side: str, images: str, scratch: str, overrides: list[str], attempt: int) -> float:
    """Images per second of one run, into a fresh output folder (no resume skipping)."""
    config = make_config(images, os.path.join(scratch, f"out-{side}-{attempt}"), overrides)
    started = time.perf_counter()
    count = (run_loop if side == "loop" else run_ray)(config)
    rate = count / (time.perf_counter() - started)
    print(f"  run {attempt} {side:>4}: {rate:7.1f} images/s", flush=True)
    return rate


def start_ray(scratch: str, overrides: list[str]) -> None:
    """Start Ray as run_caption would and run a small pipeline so the workers exist."""
    import ray

    config = make_config(os.path.join(scratch, "warmup"), os.path.join(scratch, "w"), overrides)
    make_images(config.input, 64, seed=99)
    ray.init(num_cpus=config.ray.num_cpus, include_dashboard=False, log_to_driver=False)
    run_caption(config)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1200, help="generated inputs")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per side (>= 2)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], help="config KEY=VALUE"
    )
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="caption-bench-") as scratch:
        images = os.path.join(scratch, "images")
        make_images(images, args.images)
        start_ray(scratch, args.overrides)
        rates: dict[str, list[float]] = {"loop": [], "ray": []}
        for attempt in range(max(2, args.repeats)):
            for side in rates:
                rates[side].append(timed(side, images, scratch, args.overrides, attempt))
    report(args, {side: statistics.median(values) for side, values in rates.items()})
    return 0


def report(args: argparse.Namespace, median: dict[str, float]) -> None:
    ratio = median["ray"] / median["loop"]
    print(f"images {args.images}, cpus {os.cpu_count()}, overrides {args.overrides or 'none'}")
    print(f"loop (1 process): {median['loop']:7.1f} images/s (median)")
    print(f"ray data        : {median['ray']:7.1f} images/s (median)")
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(f"ratio ray/loop  : {ratio:.2f}x  target >= {TARGET}x  {verdict}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
