"""The caption stage on a GPU: stage vs bare engine loop, with GPU busy time.

    python -m benchmarks.gpu_caption [--kind vllm|transformers] [--model DIR|builtin://...]
        [--size 1b] [--images 256] [--batch-size 32] [--max-new-tokens 64] [--actor-cpus 2]

Same comparison as benchmarks/caption_throughput.py (steady-state images/s of a bare loop
of `engine.generate` vs the caption stage) with the engine on the GPU. The stage runs in
Ray Data when Ray is installed, else in-process (which still measures the stage's own
overhead: prompt rendering, reply cleaning, Arrow columns). While each side runs, NVML is
sampled every 20 ms: "GPU busy" is the mean of its utilisation (the share of time a kernel
was running), so a CPU-bound stage shows up as a GPU that waits.

`--size 1b` builds a random-weight LLaVA with a ~1B-parameter Llama text model and a
ViT-B-sized vision tower (the tiny model's tokenizer and processor): real compute, no
download. Pass `--model DIR` for real weights where they are reachable.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from benchmarks.caption_throughput import (
    TARGET,
    bare_loop,
    in_process_stage,
    in_ray_data,
    picture,
)


@contextmanager
def gpu_busy(samples: list[float], period: float = 0.02) -> Iterator[None]:
    """Collect NVML GPU utilisation samples (percent) while the block runs."""
    import pynvml

    pynvml.nvmlInit()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            time.sleep(period)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        pynvml.nvmlShutdown()


def build_sized_llava(directory: str) -> str:
    """A random-weight LLaVA of realistic width and depth, saved with the tiny processor."""
    import torch
    from transformers import AutoProcessor, LlavaConfig, LlavaForConditionalGeneration

    from factory.models.weights import resolve_model_path

    tiny = resolve_model_path("builtin://tiny-llava")
    config = LlavaConfig.from_pretrained(tiny)
    text, vision = config.text_config, config.vision_config
    text.update(
        {
            "hidden_size": 2048,
            "intermediate_size": 5632,
            "num_hidden_layers": 16,
            "num_attention_heads": 16,
            "num_key_value_heads": 16,
            "head_dim": 128,
            "max_position_embeddings": 4096,
        }
    )
    vision.update(
        {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
        }
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).to(torch.bfloat16)
    model.save_pretrained(directory)
    AutoProcessor.from_pretrained(tiny).save_pretrained(directory)
    params = sum(p.numel() for p in model.parameters()) / 1e9
    print(f"built a random-weight LLaVA with {params:.2f} B parameters in {directory}")
    return directory


def measure(name: str, run: Callable[[], dict]) -> tuple[dict, float]:
    samples: list[float] = []
    with gpu_busy(samples):
        result = run()
    busy = statistics.mean(samples) if samples else float("nan")
    print(
        f"  {name}: {result['steady']:.1f} img/s steady ({result['overall']:.1f} overall), "
        f"GPU busy {busy:.0f} %",
        flush=True,
    )
    return result, busy


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="vllm", choices=["vllm", "transformers"])
    parser.add_argument("--model", default=None, help="weights; default: --size's random model")
    parser.add_argument("--size", default="1b", choices=["1b", "tiny"])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--actor-cpus",
        type=float,
        default=2,
        help="CPUs (so torch threads) of the actor and the loop; the GPU presets ask for 2",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.kind == "vllm" and importlib.util.find_spec("vllm") is None:
        print("vllm is not installed here: falling back to --kind transformers")
        args.kind = "transformers"
    args.device = "cuda"
    if args.model is None:
        args.model = (
            "builtin://tiny-llava"
            if args.size == "tiny"
            else build_sized_llava(tempfile.mkdtemp(prefix="sized-llava-"))
        )
    images = [picture(seed) for seed in range(args.images)]
    with_ray = importlib.util.find_spec("ray") is not None
    if with_ray:
        import ray

        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(include_dashboard=False, log_to_driver=False)
    stage_name = "caption stage in Ray Data" if with_ray else "caption stage in-process (no Ray)"
    runner = in_ray_data if with_ray else in_process_stage
    print(
        f"gpu caption: {args.images} images, batch {args.batch_size}, {args.max_new_tokens} "
        f"new tokens, {args.kind} {args.model}, {args.actor_cpus:g} CPUs per side"
    )
    bare_loop(args, images[: args.batch_size])  # warm-up: CUDA context, kernels, caches
    loops, stages = [], []
    for _ in range(args.repeats):
        loop, _busy = measure("bare engine loop", lambda: bare_loop(args, images))
        stage, _busy = measure(stage_name, lambda: runner(args, images))
        loops.append(loop["steady"])
        stages.append(stage["steady"])
    ratio = statistics.median(stages) / statistics.median(loops)
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(f"steady-state ratio stage / loop: {ratio:.2f} (target >= {TARGET}) {verdict}")


if __name__ == "__main__":
    main()
