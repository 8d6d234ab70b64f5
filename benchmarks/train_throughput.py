"""Ray Train step throughput vs a plain PyTorch loop: same tiny model, same data, 1 worker.

    .venv/bin/python -m benchmarks.train_throughput [--examples 96] [--epochs 2]
        [--repeats 2] [--batch-size 4] [--max-length 320] [--wait 60]

Data: a caption run's output folder written to a temp dir (captions/part-0.parquet with
`uri`, `caption_detailed`, `draft_style`) pointing at generated 448x336 JPEGs, one file
per example, read by `factory.train.data.load_examples` as `factory train` reads a real
run (10 % of the images held out for validation, on both sides).

Ray side: `build_trainer(TrainConfig(...)).fit()` (factory/train/loop.py in 1 Ray Train
worker reserving every CPU), LoRA on builtin://tiny-llava. The loop reports each epoch's
`samples_per_s`: training examples over the wall time of that epoch's training steps
(read each image's bytes, decode, collate, forward, backward, clip, AdamW, schedule);
the validation pass and the checkpoint come after the clock stops. The figures are read
from the history the last checkpoint carries (metrics.json).

Plain side: the same steps in this process, no Ray: `load_for_training(...)`,
`load_examples`, `collate_sft`, AdamW with the same clip and schedule, the same batch
size, and the same clock around each epoch's training steps (image reads and decodes
included); a validation pass runs between epochs, untimed, as on the Ray side. torch
gets as many threads as the Ray worker has (Ray sets OMP_NUM_THREADS to the worker's
CPUs; a probe trainer with the same scaling reads it and torch.get_num_threads()).

Steady state: model load is outside both clocks, and epoch 1 (the first step's one-time
costs: lazy inits, allocator growth) is left out on both sides; the figure per run is
the examples of epochs 2.. over their summed time. Runs interleave (plain, Ray, plain,
Ray, ...) and medians are compared. Before each side the script waits (up to --wait s)
for the CPUs to be < 15 % busy; during each side it measures the share of the CPUs that
other processes took (all busy CPU time from /proc/stat minus this process tree's, Ray's
processes included). A run whose sides both saw others below --quiet-below (10 %) is
quiet; when some runs were not, a second summary line gives the quiet runs' medians.
Target: Ray / plain >= 0.9. Exits 0 whatever the verdict.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.caption_throughput import picture

TARGET = 0.9
MODEL = "builtin://tiny-llava"
SENTENCES = [
    "A harvest field with workers cutting golden wheat under a pale sky.",
    "A great wave curls over three small boats with a mountain behind.",
    "Two fish and a prawn lie beside a short poem written in ink.",
    "A page of an old book shows constellations drawn as figures.",
    "Worn grey coins show a profile and letters around the rim.",
    "A quiet gallery room with a red vase on a wooden table.",
    "Light falls from a high window onto a woman reading a letter.",
    "A night sky swirls above a village and a dark cypress tree.",
]


# ---------------------------------------------------------------- data


def caption_run(folder: str, examples: int) -> str:
    """A caption run's output folder: generated JPEGs and captions/part-0.parquet."""
    images = os.path.join(folder, "images")
    os.makedirs(images)
    os.makedirs(os.path.join(folder, "captions"))
    uris, captions = [], []
    for index in range(examples):
        path = os.path.join(images, f"image-{index:04d}.jpg")
        with open(path, "wb") as handle:
            handle.write(picture(index))
        uris.append(path)
        # one to three sentences: targets of different lengths, as real captions are
        count = 1 + index % 3
        captions.append(" ".join(SENTENCES[(index + k) % len(SENTENCES)] for k in range(count)))
    table = pa.table(
        {
            "uri": uris,
            "caption_detailed": captions,
            "draft_style": ["detailed"] * examples,
        }
    )
    pq.write_table(table, os.path.join(folder, "captions", "part-0.parquet"))
    return folder


def train_config(args: argparse.Namespace, source: str, scratch: str, cpus: float):
    from factory.train.data import DataConfig
    from factory.train.methods import MethodConfig
    from factory.train.train_config import (
        ModelConfig,
        OptimConfig,
        ScalingConfig,
        TrainConfig,
    )

    return TrainConfig(
        name="bench",
        output=os.path.join(scratch, "model"),
        storage=os.path.join(scratch, "checkpoints"),
        data=DataConfig(kind="caption", source=source, styles=["detailed"]),
        model=ModelConfig(model=MODEL, family="llava", max_length=args.max_length),
        method=MethodConfig(method="lora"),
        optim=OptimConfig(epochs=args.epochs, batch_size=args.batch_size, lr=2e-4),
        scaling=ScalingConfig(num_workers=1, cpus_per_worker=cpus),
    )


# ---------------------------------------------------------------- the two sides


def plain_loop(config) -> list[dict]:
    """The loop's steps without Ray: per epoch, examples and seconds of the training steps."""
    import torch
    from transformers import get_scheduler

    from factory.io import uris
    from factory.models.images import decode_image
    from factory.train.collate import collate_sft
    from factory.train.data import load_examples
    from factory.train.methods import load_for_training, parameter_groups

    optim = config.optim
    torch.manual_seed(optim.seed)
    trainable = load_for_training(
        config.model.model, "llava", "caption", config.method, with_reference=False
    )
    model = trainable.model
    split = load_examples(config.data)
    steps = math.ceil(len(split.train) / optim.batch_size)
    optimizer = torch.optim.AdamW(
        parameter_groups(model, optim.lr), lr=optim.lr, weight_decay=optim.weight_decay
    )
    scheduler = get_scheduler(
        optim.schedule,
        optimizer,
        num_warmup_steps=int(optim.warmup_ratio * steps * optim.epochs),
        num_training_steps=steps * optim.epochs,
    )
    trained = [p for p in model.parameters() if p.requires_grad]

    def batch(chunk) -> dict:
        side = config.model.max_image_side
        rows = [
            (decode_image(uris.read_bytes(e.image_uri), side), e.prompt, e.target) for e in chunk
        ]
        return collate_sft(trainable.processor, "llava", rows, config.model.max_length)

    epochs = []
    for epoch in range(optim.epochs):
        model.train()
        started, seen = time.perf_counter(), 0
        for start in range(0, len(split.train), optim.batch_size):
            chunk = split.train[start : start + optim.batch_size]
            loss = model(**batch(chunk)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trained, optim.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seen += len(chunk)
        seconds = time.perf_counter() - started
        model.eval()
        with torch.no_grad():  # untimed, as in loop.py
            for start in range(0, len(split.validation), optim.batch_size):
                model(**batch(split.validation[start : start + optim.batch_size]))
        epochs.append({"epoch": epoch + 1, "examples": seen, "seconds": seconds})
    return epochs


def ray_train(config) -> list[dict]:
    """Fit with factory's trainer; per epoch, examples and seconds from its samples_per_s."""
    from factory.train.data import load_examples
    from factory.train.trainer import build_trainer

    examples = len(load_examples(config.data).train)  # 1 worker: it trains on all of them
    result = build_trainer(config).fit()
    folder = result.checkpoint.as_directory()
    with folder as local, open(os.path.join(local, "metrics.json")) as handle:
        history = json.load(handle)["history"]
    return [
        {
            "epoch": row["epoch"],
            "examples": examples,
            "seconds": examples / row["samples_per_s"],
            "reported": row["samples_per_s"],
        }
        for row in history
    ]


def _probe_loop(config: dict) -> None:
    import torch

    # Ray Train v2 keeps a report's metrics only with a checkpoint: a file says it plainly
    with open(config["path"], "w") as handle:
        json.dump(
            {"omp": os.environ.get("OMP_NUM_THREADS"), "threads": torch.get_num_threads()}, handle
        )


def probe_worker_threads(cpus: float, scratch: str) -> dict:
    """OMP_NUM_THREADS and torch's threads inside a Ray Train worker scaled like the run's."""
    import ray.train
    from ray.train.torch import TorchTrainer

    path = os.path.join(scratch, "threads.json")
    os.makedirs(scratch, exist_ok=True)
    trainer = TorchTrainer(
        _probe_loop,
        train_loop_config={"path": path},
        scaling_config=ray.train.ScalingConfig(num_workers=1, resources_per_worker={"CPU": cpus}),
        run_config=ray.train.RunConfig(name="probe", storage_path=scratch),
    )
    trainer.fit()
    with open(path) as handle:
        return json.load(handle)


# ---------------------------------------------------------------- measuring


def steady(epochs: list[dict]) -> float:
    """Examples of epochs 2.. over their summed seconds (epoch 1 holds the warm-up)."""
    later = epochs[1:] or epochs
    return sum(e["examples"] for e in later) / sum(e["seconds"] for e in later)


class OthersLoad:
    """The share of the machine's CPU time used by processes outside this script's tree.

    The CPUs may be shared with other containers whose processes this one cannot see, but
    /proc/stat counts their time: others = all busy CPU time - this process tree's. A
    thread samples the tree every 0.2 s so processes that exit mid-run (Ray Train's worker)
    still count.
    """

    def __enter__(self) -> OthersLoad:
        import threading

        import psutil

        self._psutil, self._stop = psutil, threading.Event()
        self._seen: dict[int, float] = {}
        self._start_tree = self._sample()
        self._start_busy, self._started = self._busy(), time.monotonic()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        cpus = os.cpu_count() or 1
        wall = time.monotonic() - self._started
        mine = sum(self._seen.values()) - self._start_tree
        busy = self._busy() - self._start_busy
        self.others = max(0.0, (busy - mine) / (wall * cpus))
        self.mine = mine / (wall * cpus)

    def _busy(self) -> float:
        times = self._psutil.cpu_times()
        return sum(times) - times.idle - getattr(times, "iowait", 0.0)

    def _sample(self) -> float:
        me = self._psutil.Process()
        for process in [me, *me.children(recursive=True)]:
            try:
                t = process.cpu_times()
            except self._psutil.Error:
                continue
            self._seen[process.pid] = t.user + t.system
        return sum(self._seen.values())

    def _poll(self) -> None:
        while not self._stop.wait(0.2):
            self._sample()


def wait_for_quiet(max_seconds: float, busy_below: float = 15.0) -> float:
    """Wait until the CPUs are < busy_below % busy over 1 s (at most max_seconds)."""
    import psutil  # Ray vendors psutil: importable once ray is

    deadline = time.monotonic() + max_seconds
    busy = psutil.cpu_percent(interval=1.0)
    while busy >= busy_below and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=1.0)
    return busy


def load_line(busy: float) -> str:
    one, five, _ = os.getloadavg()
    return f"CPUs {busy:.0f}% busy, load {one:.2f}/{five:.2f}"


def per_epoch(epochs: list[dict]) -> str:
    return ", ".join(f"{e['examples'] / e['seconds']:.2f}" for e in epochs)


def summary(label: str, runs: list[dict], args: argparse.Namespace) -> None:
    plain = statistics.median(run["plain"] for run in runs)
    in_ray = statistics.median(run["ray"] for run in runs)
    ratio = in_ray / plain
    verdict = "PASS" if ratio >= TARGET else "FAIL"
    print(
        f"steady state (epochs 2..{args.epochs}), {label}, {len(runs)} runs: plain "
        f"{plain:.2f} samples/s, Ray Train {in_ray:.2f} samples/s, ratio of medians "
        f"{ratio:.2f} (target >= {TARGET}) {verdict}"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=320)
    parser.add_argument("--wait", type=float, default=60, help="max s to wait for idle CPUs")
    parser.add_argument(
        "--quiet-below",
        type=float,
        default=0.1,
        help="a run is quiet when other processes used less than this share of the CPUs "
        "during both of its sides; quiet runs get a summary line of their own",
    )
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be >= 2: epoch 1 holds the warm-up and is left out")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cpus = os.cpu_count() or 1
    os.environ.setdefault("RAY_worker_niceness", "0")  # workers as nice as this process
    import ray
    import torch

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory(prefix="train-bench-") as scratch:
        source = caption_run(os.path.join(scratch, "run"), args.examples)
        probe = probe_worker_threads(cpus, os.path.join(scratch, "probe"))
        torch.set_num_threads(int(probe["threads"]))
        print(
            f"train throughput: {args.examples} examples, batch {args.batch_size}, "
            f"{args.epochs} epochs, LoRA on {MODEL}, {cpus} CPUs; Ray Train worker: "
            f"{cpus} CPUs, OMP_NUM_THREADS={probe['omp']}, torch threads {probe['threads']}; "
            f"plain loop: torch threads {torch.get_num_threads()}",
            flush=True,
        )
        runs: list[dict] = []
        for repeat in range(args.repeats):
            run_dir = os.path.join(scratch, f"r{repeat}")
            config = train_config(args, source, run_dir, cpus)
            busy = wait_for_quiet(args.wait)
            with OthersLoad() as plain_others:
                plain = plain_loop(config)
            print(
                f"  run {repeat + 1} plain (before: {load_line(busy)}; during: others "
                f"{plain_others.others:.0%} of the CPUs): epochs {per_epoch(plain)} "
                f"samples/s -> steady {steady(plain):.2f}",
                flush=True,
            )
            busy = wait_for_quiet(args.wait)
            started = time.perf_counter()
            with OthersLoad() as ray_others:
                trained = ray_train(config)
            wall = time.perf_counter() - started
            print(
                f"  run {repeat + 1} ray   (before: {load_line(busy)}; during: others "
                f"{ray_others.others:.0%} of the CPUs): epochs {per_epoch(trained)} "
                f"samples/s -> steady {steady(trained):.2f} (fit wall {wall:.1f} s)",
                flush=True,
            )
            quiet = max(plain_others.others, ray_others.others) < args.quiet_below
            runs.append({"plain": steady(plain), "ray": steady(trained), "quiet": quiet})
            ratio = runs[-1]["ray"] / runs[-1]["plain"]
            print(f"  run {repeat + 1} ratio {ratio:.2f}" + ("" if quiet else " (busy)"))
    summary("all runs", runs, args)
    quiet_runs = [run for run in runs if run["quiet"]]
    if quiet_runs and len(quiet_runs) < len(runs):
        summary(f"quiet runs (others < {args.quiet_below:.0%})", quiet_runs, args)
    ray.shutdown()


if __name__ == "__main__":
    main()
