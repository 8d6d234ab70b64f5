"""A client of a model service: the engine a stage uses for a `placement: service` model.

A stage's batch goes to the service as one call per adapter, and the replica runs its
requests concurrently: continuous batching on vLLM's async engine, Serve's dynamic
batching on the others, across every stage and batch in flight. One call per batch, not
per request, because each handle call costs the client and the replica about a millisecond
of CPU (benchmarks/RESULTS.md §14). A request that fails fails its call; the stage then
retries its rows one by one, so it fails alone. The adapter travels as Serve's
multiplexed model id, so calls go to replicas that already hold it.

A call whose replica died is sent again (Serve replaces the replica), up to `max_retries`
times: a lost replica loses no record. A call that outlives `request_timeout_s` is
cancelled, which stops its requests on the replica.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from factory.models.engine import (
    ChatRequest,
    Completion,
    EngineConfig,
    EngineInfo,
    GenerationParams,
    ServiceEndpoint,
    check_adapters,
)

# First pause before resending a request whose replica died; doubles each time.
RETRY_PAUSE_S = 1.0
# How long a new client waits for the service's replicas to answer `ready`.
READY_TIMEOUT_S = 600.0


class ServiceEngine:
    """Sends requests to the model service named by `config.service`."""

    def __init__(self, config: EngineConfig):
        from ray import serve
        from ray.serve import context as serve_context

        if config.service is None:  # EngineConfig refuses this for kind service already
            raise ValueError("a service engine needs config.service")
        self.config = config
        self.endpoint: ServiceEndpoint = config.service
        # A Ray worker reused after an earlier run shut its Serve down still caches that
        # controller's handle; this drops a dead one so the lookup finds the current one.
        serve_context._check_cached_client_alive()
        self.handle = serve.get_deployment_handle("model", app_name=self.endpoint.app)
        ready: dict[str, Any] = self.handle.ready.remote().result(timeout_s=READY_TIMEOUT_S)
        self.info = EngineInfo(
            engine=ready["engine"], model=ready["model"], revision=ready["revision"]
        )
        self.accepts_images = bool(ready.get("accepts_images", True))
        self.constrains_json = bool(ready.get("constrains_json", False))
        self.generated_tokens = 0  # running total from the completions, for stage metrics

    def generate(self, requests: Sequence[ChatRequest], params: GenerationParams) -> list[str]:
        return [completion.text for completion in self.complete(requests, params)]

    def complete(
        self, requests: Sequence[ChatRequest], params: GenerationParams
    ) -> list[Completion]:
        """One completion per request, in order: one call per adapter, all in flight."""
        check_adapters(requests, self.config)
        groups: dict[str | None, list[int]] = {}
        for position, request in enumerate(requests):
            groups.setdefault(request.adapter, []).append(position)
        sent = {
            adapter: self._send([requests[i] for i in positions], params)
            for adapter, positions in groups.items()
        }
        completions: list[Completion] = [Completion("")] * len(requests)
        for adapter, positions in groups.items():
            batch = [requests[i] for i in positions]
            done = self._result(sent[adapter], batch, params)
            for position, completion in zip(positions, done, strict=True):
                completions[position] = completion
        self.generated_tokens += sum(c.completion_tokens or 0 for c in completions)
        return completions

    def _send(self, requests: list[ChatRequest], params: GenerationParams) -> Any:
        adapter = requests[0].adapter or ""
        plain = [dataclasses.replace(request, adapter=None) for request in requests]
        handle = self.handle.options(multiplexed_model_id=adapter)
        return handle.generate.remote(plain, params)

    def _result(
        self, response: Any, requests: list[ChatRequest], params: GenerationParams
    ) -> list[Completion]:
        from ray.exceptions import (
            ActorDiedError,
            ActorUnavailableError,
            RayActorError,
            RayTaskError,
        )

        for attempt in range(self.endpoint.max_retries + 1):
            try:
                generated = response.result(timeout_s=self.endpoint.request_timeout_s)
                return _completions(generated)
            except TimeoutError:
                response.cancel()  # stop it on the replica too
                raise
            except RayTaskError as error:
                # the replica's own exception (a refused prompt, an engine error), without
                # Ray's wrapping, so the record's rejection says what went wrong
                raise error.cause from None
            except (ActorDiedError, ActorUnavailableError, RayActorError):
                if attempt == self.endpoint.max_retries:
                    raise
                # Serve is replacing the replica; the router holds the resend until one
                # is up, and the pause keeps a crash loop from spending every retry at once
                time.sleep(RETRY_PAUSE_S * 2**attempt)
                response = self._send(requests, params)
        raise AssertionError("unreachable")  # the loop returns or raises


def _completions(generated: Any) -> list[Completion]:
    completions = getattr(generated, "completions", None)
    if completions:
        return list(completions)
    return [Completion(text) for text in generated.texts]
