"""Serving latency and throughput vs direct engine calls: same tiny model, same image.

    .venv/bin/python -m benchmarks.serve_latency [--sequential 100] [--load 640]
        [--concurrency 32] [--max-new-tokens 8] [--repeats 2] [--wait 60] [--access-log]
        [--set KEY=VALUE ...]   (serving config overrides, e.g. the batch wait)

App side: `factory.serve.app_builder.start` on jobs/configs/serve_tiny_cpu.yaml (the builder
`factory serve` uses), builtin://tiny-llava through the transformers engine, one model
replica with 1 CPU. Each request is an OpenAI chat completion with the picture as a
base64 data URL, over HTTP on 127.0.0.1 (aiohttp client, keep-alive): proxy -> ingress
(auth off, JSON parse, base64, the validation stage's decode and re-encode) -> handle ->
model replica (serve.batch) -> engine, and back. Access logs are off unless --access-log
(`*.access_log` in the config): a log line per request per process is a cost of its own.

Direct side: the same engine class (`build_engine`, the replica's own) in this process,
torch limited to the replica's thread count, called with the image the ingress hands
the replica (already normalised), so both sides generate the same tokens.

Measured, side by side in one run, sides interleaved per repeat:
- sequential (one request at a time): p50 / p99 latency of each side; the overhead is
  app p50 - direct p50 (target <= 10 ms);
- bounded load (`--concurrency` clients, `--load` requests): the app's p50 / p99 latency
  and throughput; the direct side runs the same requests in batches of the replica's
  max_batch_size back to back (what the engine does with that many waiting), giving its
  throughput and per-batch latency. Targets: app p99 <= 2x app p50 at this concurrency;
  app throughput >= 0.5x the direct batches' (the median of the per-repeat ratios). The
  same load also runs against the app redeployed with `gather_in_ingress: false` (one
  model call per request, batched by the replica alone), to show what gathering gives.
Before each side the script waits (up to --wait s) for the CPUs to be < 15 % busy, and
measures the share of the CPUs other processes took during it (as train_throughput does):
on a shared 2-core machine every hop waits for a core, so read that column first.
Exits 0 whatever the verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import statistics
import time

from benchmarks.caption_throughput import picture
from benchmarks.train_throughput import OthersLoad, load_line, wait_for_quiet

PRESET = "jobs/configs/serve_tiny_cpu.yaml"
OVERHEAD_TARGET_MS = 10.0
TAIL_TARGET = 2.0
THROUGHPUT_TARGET = 0.5
PROMPT = "Describe this painting for a museum record."


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summary(latencies_s: list[float]) -> tuple[float, float]:
    return percentile(latencies_s, 0.5) * 1000, percentile(latencies_s, 0.99) * 1000


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_app_config(max_new_tokens: int, access_log: bool = False, extra: list[str] = ()):
    from factory.config_loading import load_config
    from factory.serve.serve_config import ServeConfig

    overrides = [
        f"http.port={free_port()}",
        f"generation.max_new_tokens={max_new_tokens}",
        "model_deployment.num_cpus=1",
        f"http.access_log={str(access_log).lower()}",
        f"api_deployment.access_log={str(access_log).lower()}",
        f"model_deployment.access_log={str(access_log).lower()}",
        *extra,
    ]
    return load_config(PRESET, overrides, model=ServeConfig)


class DirectEngine:
    def __init__(self, config, image: bytes):
        import torch

        from factory.io.images import normalise_image
        from factory.models.engine import ChatRequest, GenerationParams
        from factory.serve.image_input import image_limits
        from factory.serve.model_deployment import build_engine

        torch.set_num_threads(max(1, int(config.model_deployment.num_cpus)))
        self.engine = build_engine(config)
        limits = image_limits(config.limits, config.engine.max_image_side)
        seen = normalise_image(image, limits).data  # what the ingress hands the replica
        self.request = ChatRequest(prompt=PROMPT, image=seen)
        self.params = GenerationParams(max_new_tokens=config.generation.max_new_tokens)

    def call(self, batch: int = 1) -> float:
        started = time.perf_counter()
        self.engine.generate([self.request] * batch, self.params)
        return time.perf_counter() - started


async def http_load(url: str, body: dict, count: int, concurrency: int) -> tuple[list, float]:
    import aiohttp

    latencies: list[float] = []
    statuses: list[int] = []
    queue = iter(range(count))

    async def client(session: aiohttp.ClientSession) -> None:
        for _ in queue:
            started = time.perf_counter()
            async with session.post(f"{url}/v1/chat/completions", json=body) as response:
                await response.read()
                statuses.append(response.status)
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    bad = [status for status in statuses if status != 200]
    if bad:
        raise RuntimeError(f"{len(bad)} requests failed: statuses {sorted(set(bad))}")
    return latencies, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequential", type=int, default=100)
    parser.add_argument("--load", type=int, default=640)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--wait", type=float, default=60.0, help="most seconds to wait for quiet")
    parser.add_argument("--access-log", action="store_true", help="keep per-request logs on")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    args = parser.parse_args()

    import ray
    from ray import serve

    from factory.serve.app_builder import start

    config = load_app_config(args.max_new_tokens, args.access_log, args.overrides)
    image = picture(7)
    body = {
        "model": config.model_name,
        "max_tokens": args.max_new_tokens,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": PROMPT},
                    {
                        "type": "image_url",
                        "image_url": {
                            "url": "data:image/jpeg;base64," + base64.b64encode(image).decode()
                        },
                    },
                ],
            }
        ],
    }
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    direct = DirectEngine(config, image)
    url = start(config)
    batch = config.model_deployment.max_batch_size
    n1 = args.sequential
    print(
        f"serve latency: {config.engine.model}, {args.max_new_tokens} new tokens, "
        f"picture {len(image):,} bytes, replica batch {batch} (waits "
        f"{config.model_deployment.batch_wait_timeout_s * 1000:g} ms), {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    # warm up both: first calls pay lazy initialisation
    for _ in range(5):
        direct.call()
    asyncio.run(http_load(url, body, 20, 1))
    asyncio.run(http_load(url, body, 2 * args.concurrency, args.concurrency))

    seq_direct, seq_app, load_app, load_direct = [], [], [], []
    wall_app = wall_direct = 0.0
    per_repeat: list[tuple[float, float, float]] = []  # gathered, one call each, direct req/s
    tails: list[tuple[float, float]] = []  # the app's p50 and p99 under load, per repeat
    one_call_each = config.model_copy(
        update={
            "model_deployment": config.model_deployment.model_copy(
                update={"gather_in_ingress": False}
            )
        }
    )
    others: dict[str, list[float]] = {}

    def side(name: str, run):
        busy = wait_for_quiet(args.wait)
        with OthersLoad() as load:
            result = run()
        others.setdefault(name, []).append(load.others)
        print(f"  {name:<22} {load_line(busy)} before; others took {load.others:.0%}")
        return result

    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}:")
        seq_direct += side("direct, sequential", lambda: [direct.call() for _ in range(n1)])
        seq_app += side("app, sequential", lambda: asyncio.run(http_load(url, body, n1, 1)))[0]
        latencies, wall = side(
            "app, bounded load",
            lambda: asyncio.run(http_load(url, body, args.load, args.concurrency)),
        )
        load_app += latencies
        wall_app += wall
        redeploy(one_call_each, url, body, args.concurrency)
        _, wall_each = side(
            "app, one call each",
            lambda: asyncio.run(http_load(url, body, args.load, args.concurrency)),
        )
        redeploy(config, url, body, args.concurrency)
        latencies = side(
            "direct, batched", lambda: [direct.call(batch) for _ in range(args.load // batch)]
        )
        load_direct += latencies
        wall_direct += sum(latencies)  # back to back: the batches' time is the wall time
        per_repeat.append(
            (args.load / wall, args.load / wall_each, args.load // batch * batch / sum(latencies))
        )
        tails.append(summary(load_app[-args.load :]))
    serve.shutdown()
    ray.shutdown()

    d50, d99 = summary(seq_direct)
    a50, a99 = summary(seq_app)
    overhead = a50 - d50

    def share(name: str) -> str:
        return "/".join(f"{value:.0%}" for value in others[name])

    print(f"sequential, {len(seq_app)} requests per side:")
    print(
        f"  direct engine  p50 {d50:7.1f} ms  p99 {d99:7.1f} ms  "
        f"(others {share('direct, sequential')})"
    )
    print(
        f"  serve app      p50 {a50:7.1f} ms  p99 {a99:7.1f} ms  "
        f"(others {share('app, sequential')})"
    )
    verdict = "PASS" if overhead <= OVERHEAD_TARGET_MS else "FAIL"
    print(f"  overhead at p50: {overhead:.1f} ms (target <= {OVERHEAD_TARGET_MS:g} ms) {verdict}")

    l50, l99 = summary(load_app)
    b50, b99 = summary(load_direct)
    app_rps = len(load_app) / wall_app
    direct_rps = (len(load_direct) * batch) / wall_direct
    tail = l99 / l50
    print(f"bounded load, concurrency {args.concurrency}, {len(load_app)} requests per side:")
    print(
        f"  serve app      p50 {l50:7.1f} ms  p99 {l99:7.1f} ms  {app_rps:6.1f} req/s  "
        f"(others {share('app, bounded load')})"
    )
    print(
        f"  direct batches of {batch}: p50 {b50:7.1f} ms  p99 {b99:7.1f} ms per batch  "
        f"{direct_rps:6.1f} req/s  (others {share('direct, batched')})"
    )
    # per repeat as well: pooled, repeats that ran at different speeds widen the spread
    each_tail = statistics.median(p99 / p50 for p50, p99 in tails)
    verdict = "PASS" if each_tail <= TAIL_TARGET else "FAIL"
    print(
        f"  app p99 / p50: {each_tail:.2f} median per repeat, {tail:.2f} pooled "
        f"(target <= {TAIL_TARGET:g}) {verdict}"
    )
    print(f"  throughput app / direct: {app_rps / direct_rps:.2f}x")
    print("  per repeat (req/s): app gathered / app one call per request / direct batches")
    for gathered, each, direct_side in per_repeat:
        print(
            f"    {gathered:6.1f} / {each:6.1f} / {direct_side:6.1f}: app / direct "
            f"{gathered / direct_side:.2f}x, one call each / direct {each / direct_side:.2f}x, "
            f"gathered / one call each {gathered / each:.2f}x"
        )
    median = statistics.median(gathered / direct_side for gathered, _, direct_side in per_repeat)
    verdict = "PASS" if median >= THROUGHPUT_TARGET else "FAIL"
    print(
        f"  median app / direct over repeats: {median:.2f}x (target >= {THROUGHPUT_TARGET:g}) "
        f"{verdict}"
    )


def redeploy(config, url: str, body: dict, concurrency: int) -> None:
    """Replace the running app with `config`'s (same name and route) and warm it up."""
    from ray import serve

    from factory.serve.app_builder import build_application

    serve.run(
        build_application(config),
        name=config.app_name,
        route_prefix=config.route_prefix,
        blocking=False,
    )
    asyncio.run(http_load(url, body, 2 * concurrency, concurrency))


if __name__ == "__main__":
    main()
