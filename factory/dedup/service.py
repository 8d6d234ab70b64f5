"""The dedup index as Ray actors, and the two index clients `DedupStage` uses.

`start_dedup_index` starts `shards` actors (named after the dedup step's `index`) before
the stream, each seeded from what the output already holds; `stop_dedup_index` ends them.
The dedup tasks (`DedupStage` with an `index` name) find them by name. Image bytes never
reach them: a batch sends one query and one commit of hashes to each shard.

The shards reserve no CPU. By default they live on the driver's node, which a run cannot
lose without losing the driver too; `placement: spread` puts them across the cluster for
indexes too big for one node. A shard restarted after its node is lost reseeds from the
output and stops waiting for listing order (it cannot know which batches it missed).
"""

from __future__ import annotations

import asyncio
import sys
import warnings
from typing import TYPE_CHECKING, Any

from factory.dedup.order import ListingOrder, Ranges
from factory.dedup.shard import Answer, Entry, IndexShard

if TYPE_CHECKING:
    from factory.io.listing_spill import SpilledListing


class DedupShard:
    """One index shard as an async actor: queries wait for listing order, commits don't."""

    def __init__(self, settings: dict[str, Any], output: str | None, ranges: Ranges | None):
        import ray

        self._shard = IndexShard(
            settings["threshold"],
            settings["shard"],
            settings["shards"],
            settings["embedding_similarity"],
        )
        self._wait_s = settings["order_wait_s"]
        with warnings.catch_warnings():  # Ray's own property reads a deprecated attribute
            warnings.simplefilter("ignore", DeprecationWarning)
            reborn = ray.get_runtime_context().was_current_actor_reconstructed
        self._order = None if ranges is None or reborn else ListingOrder(ranges)
        if reborn:
            print(  # the driver's log: first occurrence may not hold from here on
                f"WARNING: dedup shard {settings['shard']} restarted; reseeding from the "
                "output and no longer waiting for listing order",
                file=sys.stderr,
            )
        self.seeded = self._shard.seed(output) if output else 0
        self._changed: asyncio.Condition | None = None

    async def query(self, first: int, entries: list[Entry]) -> list[Answer]:
        if self._order is not None and not self._order.ready(first):
            await self._wait(first)
        return self._shard.query(entries)

    async def commit(self, indexes: list[int], entries: list[Entry]) -> None:
        self._shard.add(entries)
        if self._order is not None:
            self._order.commit(indexes)
            async with self._condition():
                self._condition().notify_all()

    async def stats(self) -> dict[str, int]:
        return {"seeded": self.seeded, **self._shard.stats()}

    async def _wait(self, first: int) -> None:
        order = self._order
        try:
            async with self._condition():
                await asyncio.wait_for(
                    self._condition().wait_for(lambda: order.ready(first)), self._wait_s
                )
        except TimeoutError:
            print(
                f"WARNING: dedup waited {self._wait_s:g}s for the inputs before index "
                f"{first} (next due: {order.next}); deciding without them",
                file=sys.stderr,
            )

    def _condition(self) -> asyncio.Condition:
        if self._changed is None:  # made on the actor's event loop, where it is used
            self._changed = asyncio.Condition()
        return self._changed


def shard_name(index: str, shard: int) -> str:
    return f"{index}-{shard}"


def start_dedup_index(
    config: Any, index: str, output: str | None, ranges: Ranges | None
) -> list[Any]:
    """Start the shards of `index` (`config`: a DedupConfig), seeded from `output`.

    `ranges`: the run's input indexes (`SpilledListing.index_ranges`), for decisions in
    listing order; None: decide batches as they come.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if config.placement == "driver_node":
        node = ray.get_runtime_context().get_node_id()
        strategy: Any = NodeAffinitySchedulingStrategy(node_id=node, soft=True)
    else:
        strategy = "SPREAD"
    actor = ray.remote(DedupShard)
    handles = []
    for shard in range(config.shards):
        settings = {
            "threshold": config.hamming_threshold,
            "shard": shard,
            "shards": config.shards,
            "embedding_similarity": config.embedding_similarity,
            "order_wait_s": config.order_wait_s,
        }
        options = {
            "name": shard_name(index, shard),
            "num_cpus": 0,
            "max_restarts": -1,
            "max_task_retries": -1,
            "scheduling_strategy": strategy,
        }
        handles.append(actor.options(**options).remote(settings, output, ranges))
    ray.get([handle.stats.remote() for handle in handles])  # seeded before the stream
    return handles


def stop_dedup_index(handles: list[Any]) -> None:
    import ray

    for handle in handles:
        ray.kill(handle, no_restart=True)


class ShardedIndex:
    """The client of a running index: one query and one commit per shard per batch."""

    def __init__(self, index: str, shards: int):
        self.index, self.shards = index, shards
        self._handles: list[Any] | None = None

    def query(self, first: int, entries: list[Entry]) -> list[list[Answer]]:
        import ray

        handles = self._find()
        compact = [entry.compact() for entry in entries]
        calls = [
            handle.query.remote(first, entries if shard == 0 else compact)
            for shard, handle in enumerate(handles)
        ]
        return ray.get(calls)

    def commit(self, indexes: list[int], kept: list[Entry]) -> None:
        import ray

        compact = [entry.compact() for entry in kept]
        handles = self._find()
        ray.get(
            [
                handle.commit.remote(indexes, kept if shard == 0 else compact)
                for shard, handle in enumerate(handles)
            ]
        )

    def _find(self) -> list[Any]:
        import ray

        if self._handles is None:
            try:
                self._handles = [
                    ray.get_actor(shard_name(self.index, shard)) for shard in range(self.shards)
                ]
            except ValueError as missing:
                raise RuntimeError(
                    f"no dedup index {self.index!r}: the driver starts one with "
                    "start_dedup_index before the stream and stops it after"
                ) from missing
        return self._handles


class LocalIndex:
    """The whole index in this process (one shard, no waiting): for loops and tests."""

    def __init__(self, config: Any, resume_from: str | None):
        self._shard = IndexShard(config.hamming_threshold, 0, 1, config.embedding_similarity)
        if resume_from is not None:
            self._shard.seed(resume_from)

    def query(self, first: int, entries: list[Entry]) -> list[list[Answer]]:
        return [self._shard.query(entries)]

    def commit(self, indexes: list[int], kept: list[Entry]) -> None:
        self._shard.add(kept)


def start_for_steps(steps: list[Any], output: str, listing: SpilledListing, ordered: bool) -> list:
    """Start the index the plan's dedup step names (none: no dedup step, nothing started);
    `ordered`: decisions in listing order (the run preserves order)."""
    for step in steps:
        if step.columns.stage == "dedup" and step.kwargs.get("index"):
            config, index = step.kwargs["config"], step.kwargs["index"]
            ranges = listing.index_ranges if ordered else None
            return start_dedup_index(config, index, output, ranges)
    return []
