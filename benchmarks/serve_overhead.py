"""What the serving app adds over a bare Ray Serve app of the same shape, and where it goes.

    .venv/bin/python -m benchmarks.serve_overhead [--sequential 300] [--load 640]
        [--concurrency 32] [--repeats 2] [--wait 30]

Both apps are an HTTP ingress plus a model deployment behind a deployment handle, and
both "models" return at once, so what is measured is the serving path, not a model:
- bare: a FastAPI ingress that reads the body, `json.loads` it, calls the model
  deployment's method through a handle and returns a small JSON answer; the model
  deployment returns a fixed text. Serve's own floor (proxy, ingress, handle, replica).
- app: `factory.serve.app_builder.start` with the tiny CPU preset's deployment options and an
  engine that returns a fixed Completion at once (`InstantEngine`): auth check, the
  JSON bounds, pydantic validation, the chat mapping, the handle, the model replica's
  context check and `serve.batch`, the OpenAI response body; the ingress gathers
  concurrent requests into one model call.
Variants of the app, each a separate deployment, split the app's cost:
- `app, one call each`: `gather_in_ingress: false`, one model call per request (the app
  gathers concurrent requests into one call per batch);
- `app, image`: the chat also carries the 448x336 test picture as a data URL (base64
  decode, the validation stage's decode and re-encode, and the bytes to the replica).
Sequential: one request at a time, p50 / p99. Under load: `--concurrency` clients,
throughput. Sides interleave per repeat; before each, the script waits for the CPUs to be
quiet and reports the share other processes took (a shared 2-core machine: read it first).
The overhead target (issue #17) is app p50 - bare p50 <= 3 ms. Exits 0 whatever it finds.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
from collections.abc import Sequence

# at module level: FastAPI resolves the route's (string) annotations in these globals
from fastapi import FastAPI, Request

from benchmarks.caption_throughput import picture
from benchmarks.serve_latency import free_port, http_load, summary
from benchmarks.train_throughput import OthersLoad, load_line, wait_for_quiet
from factory.models.engine import ChatRequest, Completion, EngineConfig, EngineInfo

OVERHEAD_TARGET_MS = 3.0
REPLY = "A red horse stands in a green field."


class InstantEngine:
    """A model that answers at once: the serving path is all that is left to measure."""

    def __init__(self, config: EngineConfig):
        self.info = EngineInfo(engine="instant", model=config.model, revision="instant-1")

    def generate(self, requests: Sequence[ChatRequest], params: object) -> list[str]:
        return [REPLY for _ in requests]

    def complete(self, requests: Sequence[ChatRequest], params: object) -> list[Completion]:
        return [Completion(REPLY, "stop", 8, 9) for _ in requests]


class BareModel:
    async def generate(self, requests: list, params: dict) -> list[str]:
        return [REPLY for _ in requests]


def bare_ingress(model):
    """The bare app's FastAPI ingress class (built where Serve imports this module)."""
    api = FastAPI()

    @api.post("/v1/chat/completions")
    async def chat(request: Request) -> dict:
        body = json.loads(await request.body())
        texts = await model.generate.remote([body["messages"][-1]["content"]], {})
        return {"choices": [{"message": {"role": "assistant", "content": texts[0]}}]}

    return api


class BareIngress:
    def __init__(self, model):
        self.model = model

    def __serve_build_asgi_app__(self):
        return bare_ingress(self.model)


def start_bare(port_prefix: str) -> str:
    from ray import serve

    model = serve.deployment(name="model", ray_actor_options={"num_cpus": 0.25})(BareModel)
    ingress = serve.deployment(
        name="api", ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256
    )(serve.ingress()(BareIngress))
    serve.run(ingress.bind(model.bind()), name="bare", route_prefix=port_prefix)
    return port_prefix


def app_config(name: str, prefix: str, extra: dict):
    from factory.serve.serve_config import ServeConfig

    tree = {
        "app_name": name,
        "route_prefix": prefix,
        "model_name": "instant",
        "engine": {"kind": "benchmarks.serve_overhead:InstantEngine", "model": "instant"},
        "http": {"host": "127.0.0.1", "port": 0, "access_log": False},
        "api_deployment": {"num_cpus": 0.25, "max_ongoing_requests": 256, "access_log": False},
        "model_deployment": {
            "num_cpus": 0.25,
            "max_ongoing_requests": 32,
            "max_queued_requests": 64,
            "max_batch_size": 8,
            "batch_wait_timeout_s": 0.005,
            "access_log": False,
        },
    }
    for key, value in extra.items():
        tree[key] = {**tree.get(key, {}), **value}
    return ServeConfig.model_validate(tree)


def deploy_apps(port: int) -> dict[str, str]:
    """Every side on one Serve instance (one proxy); returns side -> base URL."""
    from ray import serve

    from factory.serve.app_builder import build_application

    serve.start(
        http_options={"host": "127.0.0.1", "port": port},
        logging_config={"enable_access_log": False},
    )
    base = f"http://127.0.0.1:{port}"
    urls = {"bare": base + start_bare("/bare")}
    variants = {
        "app": ("app", "/app", {}),
        "app, one call each": (
            "app-each",
            "/each",
            {"model_deployment": {"gather_in_ingress": False}},
        ),
    }
    for side, (name, prefix, extra) in variants.items():
        serve.run(
            build_application(app_config(name, prefix, extra)), name=name, route_prefix=prefix
        )
        urls[side] = base + prefix
    urls["app, image"] = urls["app"]
    return urls


def bodies(image: bytes) -> dict[str, dict]:
    text = {"model": "instant", "messages": [{"role": "user", "content": "Describe it."}]}
    data_url = "data:image/jpeg;base64," + base64.b64encode(image).decode()
    parts = [
        {"type": "text", "text": "Describe it."},
        {"type": "image_url", "image_url": {"url": data_url}},
    ]
    with_image = {"model": "instant", "messages": [{"role": "user", "content": parts}]}
    return {
        "bare": text,
        "app": text,
        "app, one call each": text,
        "app, image": with_image,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--load", type=int, default=640)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--wait", type=float, default=30.0, help="most seconds to wait for quiet")
    args = parser.parse_args()

    import ray
    from ray import serve

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    urls = deploy_apps(free_port())
    requests = bodies(picture(7))
    print(f"serve overhead: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    for side, url in urls.items():  # warm up: first calls pay lazy initialisation
        asyncio.run(http_load(url, requests[side], 30, 1))
        asyncio.run(http_load(url, requests[side], 2 * args.concurrency, args.concurrency))

    sequential: dict[str, list[float]] = {side: [] for side in urls}
    loaded: dict[str, tuple[int, float]] = {side: (0, 0.0) for side in urls}
    others: dict[str, list[float]] = {side: [] for side in urls}
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1}:")
        for side, url in urls.items():
            busy = wait_for_quiet(args.wait)
            with OthersLoad() as load:
                latencies, _ = asyncio.run(http_load(url, requests[side], args.sequential, 1))
                _, wall = asyncio.run(http_load(url, requests[side], args.load, args.concurrency))
            sequential[side] += latencies
            count, total = loaded[side]
            loaded[side] = (count + args.load, total + wall)
            others[side].append(load.others)
            print(f"  {side:<20} {load_line(busy)} before; others took {load.others:.0%}")
    serve.shutdown()
    ray.shutdown()
    report(sequential, loaded, others, args.concurrency)


def report(sequential, loaded, others, concurrency: int) -> None:
    bare50, _ = summary(sequential["bare"])
    bare_rps = loaded["bare"][0] / loaded["bare"][1]
    print(f"sequential p50 / p99, and throughput at concurrency {concurrency}:")
    for side, latencies in sequential.items():
        p50, p99 = summary(latencies)
        rps = loaded[side][0] / loaded[side][1]
        share = "/".join(f"{value:.0%}" for value in others[side])
        print(
            f"  {side:<20} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  (+{p50 - bare50:5.2f} ms)  "
            f"{rps:6.1f} req/s ({rps / bare_rps:.2f}x bare)  others {share}"
        )
    overhead = summary(sequential["app"])[0] - bare50
    verdict = "PASS" if overhead <= OVERHEAD_TARGET_MS else "FAIL"
    print(f"app over bare at p50: {overhead:.2f} ms (target <= {OVERHEAD_TARGET_MS:g}) {verdict}")


if __name__ == "__main__":
    # run from the imported module, not __main__: Ray then ships the bare app's classes by
    # reference, and FastAPI can resolve the route's annotations in the module's globals
    from benchmarks import serve_overhead

    serve_overhead.main()
