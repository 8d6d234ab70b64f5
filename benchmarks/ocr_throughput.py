"""OCR throughput per core: the OCR stage in a Ray Data pipeline vs a plain rapidocr loop.

    .venv/bin/python -m benchmarks.ocr_throughput [--images 120] [--actors 1] [--repeats 2]
        [--rows-per-block 8] [--batch-size 4]

(run from the repository root: the images come from `tests/ocrgen.py`.)

Both sides read the same images: generated museum labels plus the shipped samples, each
normalised as the validate stage does (JPEG, long side at most 1024).
- loop: `RapidOCR(params)(bgr_array)` in a plain Python loop, the process pinned to one
  core, on arrays decoded before timing. `params` are the engine's own settings
  (`rapidocr_params(1)`: one onnxruntime thread), so both sides do the same work.
- ray: `factory.pipeline.apply` of a `StageStep(OcrStage, ...)` over `ray.data.from_arrow`
  blocks holding the listing columns and the `image` bytes, `--actors` actors of 1 CPU
  each, consumed with `iter_batches`. Timed from plan to last row, so actor start and
  model loading (a few seconds, printed apart) count against it; Ray itself is started
  and warmed up before timing.
Per core = images/s divided by the cores used (1 for the loop, `--actors` for Ray).
Runs are interleaved (loop, ray, loop, ray, ...) and medians compared, because these
machines are shared and noisy. Exits 0 whatever the verdict.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from factory import records
from factory.io.images import ImageLimits, decode_rgb, normalise_image
from factory.models.ocr import rapidocr_params
from factory.pipeline import StageStep, apply
from factory.stage_kit.contract import Resources
from factory.stages.ocr import OcrConfig, OcrStage
from tests.helpers import listing
from tests.ocrgen import LABELS, label_image

TARGET = 0.9
STAGE_SECONDS = records.TIMING_PREFIX + OcrStage.COLUMNS.stage
SAMPLES = Path(__file__).resolve().parents[1] / "factory" / "samples"
SAMPLE_SUFFIXES = (".jpg", ".png")


def source_images() -> list[bytes]:
    """The distinct inputs, encoded: every generated label, then every shipped sample."""
    encoded = [_png(label_image(index)[0]) for index in range(len(LABELS))]
    samples = sorted(p for p in SAMPLES.iterdir() if p.suffix in SAMPLE_SUFFIXES)
    encoded.extend(path.read_bytes() for path in samples)
    return encoded


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def normalised_images(count: int) -> list[bytes]:
    """`count` inputs as the validate stage hands them on, cycling over the sources."""
    limits = ImageLimits()
    distinct = [normalise_image(data, limits).data for data in source_images()]
    return [distinct[index % len(distinct)] for index in range(count)]


def image_table(images: list[bytes]) -> pa.Table:
    table = listing([f"bench://{index:05d}" for index in range(len(images))])
    return table.append_column("image", pa.array(images, pa.binary()))


@contextmanager
def one_core() -> Iterator[None]:
    """Pin this process to one core for the block, then give back the cores it had."""
    had = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(had)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, had)


@dataclass(frozen=True)
class Run:
    images: int
    seconds: float
    """wall clock, first image in to last result out"""
    busy_seconds: float
    """time spent reading images: the whole loop; for Ray, inside the stage's batches"""
    lines: int
    """text lines kept (score >= min_score): equal on both sides when they did the same work"""

    @property
    def rate(self) -> float:
        return self.images / self.seconds


class RawLoop:
    """RapidOCR called directly on BGR arrays, one image after another."""

    def __init__(self, images: list[bytes], min_score: float):
        from rapidocr import RapidOCR

        self.arrays = [np.ascontiguousarray(np.asarray(decode_rgb(b))[:, :, ::-1]) for b in images]
        self.min_score = min_score
        self.engine = RapidOCR(params=rapidocr_params(threads=1))
        self.engine(self.arrays[0])  # loads the models, untimed

    def run(self) -> Run:
        lines = 0
        with one_core():
            started = time.perf_counter()
            for array in self.arrays:
                result = self.engine(array)
                lines += sum(score >= self.min_score for score in result.scores or ())
            elapsed = time.perf_counter() - started
        return Run(len(self.arrays), elapsed, elapsed, lines)


def ocr_step(actors: int, batch_size: int) -> StageStep:
    resources = Resources(compute="actors", concurrency=actors, num_cpus=1, batch_size=batch_size)
    config = OcrConfig(resources=resources)
    return StageStep(OcrStage, {"config": config}, resources)


def run_ray(table: pa.Table, step: StageStep, rows_per_block: int) -> Run:
    import ray.data

    starts = range(0, table.num_rows, rows_per_block)
    blocks = [table.slice(start, rows_per_block) for start in starts]
    started = time.perf_counter()
    dataset = apply(ray.data.from_arrow(blocks), step)
    rows = lines = 0
    busy = 0.0
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        if set(batch.column("status").to_pylist()) != {"ok"}:
            raise RuntimeError(f"rows were rejected: {batch.column('detail').to_pylist()}")
        rows += batch.num_rows
        lines += sum(len(found) for found in batch.column("ocr").to_pylist())
        busy += sum(batch.column(STAGE_SECONDS).to_pylist())
    elapsed = time.perf_counter() - started
    if rows != table.num_rows:
        raise RuntimeError(f"{rows} rows came out of {table.num_rows}")
    return Run(rows, elapsed, busy, lines)


def start_ray(table: pa.Table, step: StageStep, rows_per_block: int) -> None:
    import ray
    import ray.data

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # as the caption pipeline runs
    context.enable_progress_bars = False
    run_ray(table.slice(0, 2), step, rows_per_block)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=120, help="images per timed run")
    parser.add_argument("--actors", type=int, default=1, help="OCR actors (1 CPU each)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per side (>= 1)")
    parser.add_argument("--rows-per-block", type=int, default=8, help="rows per input block")
    parser.add_argument("--batch-size", type=int, default=4, help="rows per OCR batch")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    images = normalised_images(args.images)
    table = image_table(images)
    step = ocr_step(args.actors, args.batch_size)
    loop = RawLoop(images, step.kwargs["config"].min_score)
    start_ray(table, step, args.rows_per_block)
    runs: dict[str, list[Run]] = {"loop": [], "ray": []}
    sides = {"loop": loop.run, "ray": lambda: run_ray(table, step, args.rows_per_block)}
    for attempt in range(max(1, args.repeats)):
        for side, run in sides.items():
            result = run()
            runs[side].append(result)
            print(f"  run {attempt} {side:>4}: {result.rate:6.2f} images/s", flush=True)
    report(args, runs)
    return 0


def report(args: argparse.Namespace, runs: dict[str, list[Run]]) -> None:
    cores = {"loop": 1, "ray": args.actors}
    rate = {side: statistics.median(run.rate for run in done) for side, done in runs.items()}
    per_core = {side: rate[side] / cores[side] for side in rate}
    ratio = per_core["ray"] / per_core["loop"]
    ray = min(runs["ray"], key=lambda run: abs(run.rate - rate["ray"]))  # the median run
    overhead = ray.seconds - ray.busy_seconds / args.actors
    lines = {side: done[-1].lines for side, done in runs.items()}
    print(
        f"images {args.images}, actors {args.actors}, rows/block {args.rows_per_block}, "
        f"batch {args.batch_size}, machine cpus {os.cpu_count()}, medians of {args.repeats}"
    )
    print(f"text lines kept   : loop {lines['loop']}, ray {lines['ray']} (equal: same work)")
    print(f"raw loop, 1 core  : {rate['loop']:6.2f} images/s")
    print(f"ray, {args.actors} actor(s)  : {rate['ray']:6.2f} images/s")
    print(
        f"  median ray run  : {ray.seconds:.1f} s wall, {ray.busy_seconds:.1f} actor-s inside "
        f"the stage, ~{overhead:.1f} s start-up and scheduling"
    )
    print(f"per core          : loop {per_core['loop']:.2f}, ray {per_core['ray']:.2f} images/s")
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(f"ratio ray/loop per core: {ratio:.2f}x  target >= {TARGET}x  {verdict}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
