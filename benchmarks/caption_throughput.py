"""Caption stage inside Ray Data vs a bare loop of engine calls: same model, same images.

    .venv/bin/python -m benchmarks.caption_throughput [--images 160] [--batch-size 8]
        [--model builtin://tiny-llava] [--kind transformers] [--device cpu] [--repeats 2]

The loop side loads the engine once and calls `engine.generate` on batches of requests.
The Ray side streams the same images through `CaptionStage` in an actor pool of one actor
(Ray Data's map_batches), which also cleans each reply and builds the Arrow columns.
Both sides get the whole machine: the actor reserves every CPU, so torch gets as many
threads as in the loop. One-time costs (Ray start, actor start, model load) are excluded
from the steady-state figure on both sides: throughput counts the images after the first
batch, over the time after the first batch came back. Runs are interleaved and medians
compared. Target: Ray / loop >= 0.95. Exits 0 whatever the verdict.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from factory.models.engine import ChatRequest, EngineConfig, GenerationParams
from factory.models.engine_loader import load_engine
from factory.prompts import load_prompt
from factory.stage_kit.contract import Resources
from factory.stages.caption import CaptionConfig, CaptionStage

TARGET = 0.95
STYLE = {"detailed": "caption_fusion"}


def picture(seed: int, side: int = 448) -> bytes:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (side, side * 3 // 4), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(6):
        x, y = (int(v) for v in rng.integers(0, side, 2))
        size = int(rng.integers(20, side // 3))
        draw.ellipse(
            (x, y, x + size, y + size), fill=tuple(int(v) for v in rng.integers(0, 256, 3))
        )
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def steady_rate(done_times: list[float], batch_rows: list[int], started: float) -> dict:
    """Images/s after the first batch (steady state) and overall, from batch finish times."""
    total = sum(batch_rows)
    overall = total / (done_times[-1] - started)
    if len(done_times) < 2:
        return {"steady": overall, "overall": overall}
    steady = (total - batch_rows[0]) / (done_times[-1] - done_times[0])
    return {"steady": steady, "overall": overall}


def engine_config(args: argparse.Namespace) -> EngineConfig:
    return EngineConfig(kind=args.kind, model=args.model, device=args.device, dtype=args.dtype)


def caption_config(args: argparse.Namespace, num_cpus: float, num_gpus: float) -> CaptionConfig:
    return CaptionConfig(
        engine=engine_config(args),
        styles=STYLE,
        generation=GenerationParams(max_new_tokens=args.max_new_tokens),
        auxiliary=False,
        resources=Resources(
            compute="actors",
            concurrency=1,
            batch_size=args.batch_size,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
        ),
    )


def bare_loop(args: argparse.Namespace, images: list[bytes]) -> dict:
    if args.actor_cpus:
        import torch

        # the actor's torch gets OMP_NUM_THREADS = its CPUs from Ray; the loop gets the same
        torch.set_num_threads(int(args.actor_cpus))
    engine = load_engine(engine_config(args))
    prompt = load_prompt(STYLE["detailed"]).render(auxiliary="")
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    started = time.time()
    done, rows = [], []
    for start in range(0, len(images), args.batch_size):
        chunk = images[start : start + args.batch_size]
        engine.generate([ChatRequest(prompt=prompt, image=image) for image in chunk], params)
        done.append(time.time())
        rows.append(len(chunk))
    return steady_rate(done, rows, started)


def listing_table(images: list[bytes]) -> pa.Table:
    from factory import records

    n = len(images)
    columns = {f.name: pa.nulls(n, f.type) for f in records.LISTING_SCHEMA}
    columns["uri"] = pa.array([f"bench/{i}.jpg" for i in range(n)])
    columns["input_index"] = pa.array(range(n), pa.int64())
    columns["status"] = pa.array([records.OK] * n)
    table = pa.table(columns, schema=records.LISTING_SCHEMA)
    return table.append_column("image", pa.array(images, pa.binary()))


class TimedCaptionStage(CaptionStage):
    """Stamps each batch with the wall time the actor finished it.

    Output batches can wait in Ray Data's queues before the driver sees them; the actor's
    own finish times measure the stage's steady throughput, scheduling gaps included.
    """

    def __call__(self, batch: pa.Table) -> pa.Table:
        out = super().__call__(batch)
        return out.append_column("finished_at", pa.array([time.time()] * out.num_rows))


def in_ray_data(args: argparse.Namespace, images: list[bytes]) -> dict:
    import ray
    import ray.data

    from factory.pipeline import StageStep, apply

    cpus = args.actor_cpus or ray.cluster_resources().get("CPU", 1)
    config = caption_config(args, num_cpus=cpus, num_gpus=1 if args.device != "cpu" else 0)
    step = StageStep(
        TimedCaptionStage, {"config": config}, config.resources, CaptionStage.columns_for(config)
    )
    table = listing_table(images)
    blocks = [table.slice(s, args.batch_size) for s in range(0, table.num_rows, args.batch_size)]
    dataset = apply(ray.data.from_arrow(blocks), step)
    started = time.time()
    finished = [
        (batch.column("finished_at")[0].as_py(), batch.num_rows)
        for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None)
    ]
    finished.sort()
    return steady_rate([t for t, _ in finished], [n for _, n in finished], started)


def in_process_stage(args: argparse.Namespace, images: list[bytes]) -> dict:
    """The stage without Ray (for machines with no Ray): its own overhead over the engine."""
    stage = CaptionStage(caption_config(args, num_cpus=1, num_gpus=0))
    table = listing_table(images)
    started = time.time()
    done, rows = [], []
    for start in range(0, table.num_rows, args.batch_size):
        stage(table.slice(start, args.batch_size))
        done.append(time.time())
        rows.append(min(args.batch_size, table.num_rows - start))
    return steady_rate(done, rows, started)


def compare(
    name: str, args: argparse.Namespace, images: list[bytes], runner: Callable
) -> tuple[float, float]:
    loops, others = [], []
    for repeat in range(args.repeats):
        loop = bare_loop(args, images)
        other = runner(args, images)
        loops.append(loop["steady"])
        others.append(other["steady"])
        print(
            f"  run {repeat + 1}: loop {loop['steady']:.1f} img/s (overall {loop['overall']:.1f}), "
            f"{name} {other['steady']:.1f} img/s (overall {other['overall']:.1f})",
            flush=True,
        )
    return statistics.median(loops), statistics.median(others)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--model", default="builtin://tiny-llava")
    parser.add_argument("--kind", default="transformers")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--actor-cpus", type=float, default=None, help="CPUs the actor reserves (default: all)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    images = [picture(seed) for seed in range(args.images)]
    print(
        f"caption throughput: {args.images} images, batch {args.batch_size}, "
        f"{args.max_new_tokens} new tokens, {args.kind} {args.model} on {args.device}, "
        f"{os.cpu_count()} CPUs"
    )
    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(include_dashboard=False, log_to_driver=False)
    loop, in_ray = compare("ray data", args, images, in_ray_data)
    ratio = in_ray / loop
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(
        f"steady state: loop {loop:.1f} img/s, Ray Data {in_ray:.1f} img/s, "
        f"ratio {ratio:.2f} (target >= {TARGET}) {verdict}"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
