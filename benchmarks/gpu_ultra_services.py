"""The whole caption loop on one GPU: the model as one service vs a copy per stage.

    python -m benchmarks.gpu_ultra_services [--size 1b|tiny] [--images 96]
        [--max-new-tokens 48] [--device cuda] [--replica-cpus 4]

Both sides run `factory caption`'s real runner over the same generated images with the
loop's six generating stages (caption, qa, expand, decompose, critic, rewrite), all on one
random-weight LLaVA through the transformers engine:
- services: `models.vlm.placement: service`, one replica holding the whole GPU; the stages
  are CPU-only clients, so every stage's requests meet in one engine;
- per-stage copies: `placement: in_stage`, each stage's actor holds its own copy on a
  sixth of the GPU (today's layout, squeezed onto one card).
NVML is sampled every 20 ms on each side ("GPU busy": the share of time a kernel ran).
Prints images/s and GPU busy per side and their ratio. `--size tiny --device cpu` is a
smoke run for a CPU machine (no NVML there: busy is reported as n/a).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

from benchmarks.caption_throughput import picture

LOOP = ("caption", "qa", "expand", "decompose", "critic", "rewrite")


def write_images(folder: Path, count: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        (folder / f"img{index:05d}.jpg").write_bytes(picture(index))


def loop_config(model: str, placement: str, args: argparse.Namespace) -> dict:
    engine = {"model": model, "device": args.device, "dtype": args.dtype}
    stage_gpus = 0.0 if placement == "service" or args.device == "cpu" else 1 / len(LOOP)
    stage = {"resources": {"num_cpus": 0.5, "num_gpus": stage_gpus, "batch_size": 16}}
    # (the loop stages are one-actor pools by default; only their share of the box changes)
    tokens = {"max_new_tokens": args.max_new_tokens}
    return {
        "models": {
            "vlm": {
                "engine": engine,
                "placement": placement,
                "service": {
                    "num_cpus": args.replica_cpus,
                    "num_gpus": 0 if args.device == "cpu" else 1,
                    "max_batch_size": 32,
                    "max_ongoing_requests": 256,
                },
            }
        },
        "ocr": None,
        "health": {"reject_on": []},
        "caption": {"model": "vlm", "generation": tokens, **stage},
        "qa": {"step": {"model": "vlm", "prompt": "qa", "generation": tokens}, **stage},
        "expand": {
            "questions": {"model": "vlm", "prompt": "expand_questions", "generation": tokens},
            "answer": {"model": "vlm", "prompt": "expand_answer", "generation": tokens},
            **stage,
        },
        "decompose": {
            "step": {"model": "vlm", "prompt": "decompose", "generation": tokens},
            **stage,
        },
        "critic": {"step": {"model": "vlm", "prompt": "critic", "generation": tokens}, **stage},
        "rewrite": {"step": {"model": "vlm", "prompt": "rewrite", "generation": tokens}, **stage},
    }


def run_side(name: str, config: dict, images: Path, args: argparse.Namespace) -> dict:
    import yaml

    from benchmarks.gpu_caption import gpu_busy
    from factory.run_config import load_run_config
    from factory.runner import run_caption

    output = Path(tempfile.mkdtemp(prefix=f"ultra-{name}-"))
    path = output.with_suffix(".yaml")
    path.write_text(yaml.safe_dump({**config, "input": str(images), "output": str(output)}))
    config = load_run_config(path)  # onto the defaults, as `factory caption --config` does
    samples: list[float] = []
    watch = gpu_busy(samples) if args.device != "cpu" else nullcontext()
    started = time.perf_counter()
    with watch:
        result = run_caption(config)
    seconds = time.perf_counter() - started
    busy = statistics.mean(samples) if samples else float("nan")
    rate = result.counts.inputs / seconds
    print(f"  {name}: {rate:.2f} images/s ({seconds:.0f}s incl. loads), GPU busy {busy:.0f} %")
    return {"images_per_s": rate, "gpu_busy": busy, "counts": vars(result.counts)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="1b", choices=["1b", "tiny"])
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--replica-cpus", type=float, default=4)
    args = parser.parse_args()
    if args.size == "tiny":
        model = "builtin://tiny-llava"
    else:
        from benchmarks.gpu_caption import build_sized_llava

        model = build_sized_llava(tempfile.mkdtemp(prefix="sized-llava-"))
    images = Path(tempfile.mkdtemp(prefix="ultra-images-"))
    write_images(images, args.images)
    print(f"ultra loop, {args.images} images, {args.max_new_tokens} new tokens per call")
    sides = {
        placement: run_side(placement, loop_config(model, placement, args), images, args)
        for placement in ("service", "in_stage")
    }
    ratio = sides["service"]["images_per_s"] / sides["in_stage"]["images_per_s"]
    print(f"services / per-stage copies: {ratio:.2f}x images/s")
    print(json.dumps(sides))


if __name__ == "__main__":
    main()
