"""Dedup: exact (content hash) and near (64-bit DCT perceptual hash, Hamming distance).

`FingerprintStage` (factory.stages.fingerprint) computes the perceptual hash and runs
wide. `DedupStage` runs as plain tasks that send only hashes to the index: shards of
accepted images' hashes, `shards` Ray actors started by the runner (factory.dedup). A
batch asks every shard for its inputs' closest stored matches, decides in listing order
(within the batch too), and commits the images it keeps; the shards make a batch wait
until every earlier input is committed, so the first occurrence in listing order is kept
even though batches run in parallel. Without a running index (a plain loop, a test) the
whole index lives in the stage. On a resumed run the index starts from the images already
written.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from factory import records
from factory.dedup.service import LocalIndex, ShardedIndex
from factory.dedup.shard import Answer, Entry, IndexShard
from factory.records import Duplicate
from factory.stage_kit.contract import (
    Columns,
    Resources,
    StageConfig,
    check_columns,
    fixed_columns,
    map_batch,
)


class DedupConfig(StageConfig):
    exact: bool = Field(True, description="drop byte-identical files")
    near: bool = Field(True, description="drop perceptual near-duplicates")
    hamming_threshold: int = Field(
        6, ge=0, le=16, description="largest Hamming distance of 64-bit pHashes called near"
    )
    embedding_similarity: float | None = Field(
        None,
        gt=0,
        le=1,
        description="also call images near duplicates when the cosine similarity of their CLIP "
        "embeddings reaches this (e.g. 0.95); needs the clip stage; None: off. Every "
        "embedding lives on index shard 0 and each query scans them all, so suited to runs "
        "of up to ~1e5 images",
    )
    shards: int = Field(
        2,
        ge=1,
        le=1024,
        description="index shards (Ray actors holding hashes only). Each holds ~0.6 KB per "
        "accepted image / shards (benchmarks/RESULTS.md, issue #18): add shards so that each stays "
        "under ~10M images; every batch sends each shard one query and one commit",
    )
    placement: Literal["driver_node", "spread"] = Field(
        "driver_node",
        description="where the shards run: on the driver's node (a worker node lost takes no "
        "shard with it), or spread across the cluster (for indexes too big for one node)",
    )
    order_wait_s: float = Field(
        600.0,
        gt=0,
        description="longest a batch waits for earlier inputs to be decided before it is "
        "decided anyway (a safety net; then the first occurrence may not be the one kept)",
    )
    resources: Resources = Field(
        default_factory=lambda: Resources(compute="tasks", num_cpus=0.25, batch_size=64),
        description="dedup runs as tasks that send hashes to the index shards; a batch is "
        "one query and one commit per shard, so larger batches mean fewer messages",
    )


class DedupStage:
    COLUMNS = Columns(
        stage="dedup",
        needs=("uri", "input_index", "content_sha256", "phash"),
        optional=("embedding",),
    )
    columns_for = fixed_columns(COLUMNS)

    def __init__(
        self, config: DedupConfig, resume_from: str | None = None, index: str | None = None
    ):
        """`index`: the name of a running sharded index (start_dedup_index); None: the
        whole index lives in this stage, seeded from `resume_from`."""
        self.config = config
        self._index: Any = (
            LocalIndex(config, resume_from) if index is None else ShardedIndex(index, config.shards)
        )

    def __call__(self, batch: pa.Table) -> pa.Table:
        check_columns(batch, self.COLUMNS)
        started = time.perf_counter()
        indexes = batch.column("input_index").to_pylist()
        ok = batch.filter(pc.fill_null(pc.equal(batch.column("status"), records.OK), False))
        # index failures (a lost shard) fail the task, which Ray retries; never a record
        results = self._decide(ok, min(indexes) if indexes else 0, indexes)
        spent = time.perf_counter() - started
        out = map_batch(batch, self.COLUMNS, lambda rows: results)
        timing = records.TIMING_PREFIX + self.COLUMNS.stage
        share = pa.array([spent / batch.num_rows] * batch.num_rows, pa.float64())
        return out.set_column(out.column_names.index(timing), timing, share)

    def _decide(self, ok: pa.Table, first: int, indexes: list[int]) -> list[Any]:
        names = ["uri", "input_index", "content_sha256", "phash"]
        names += ["embedding"] * ("embedding" in ok.column_names)
        rows = ok.select(names).to_pylist()
        order = sorted(range(len(rows)), key=lambda i: rows[i]["input_index"])
        entries = [_entry(rows[i]) for i in order]
        answers = self._index.query(first, entries)
        in_batch = IndexShard(self.config.hamming_threshold, 0, 1, self.config.embedding_similarity)
        results: list[Any] = [None] * len(rows)
        kept = []
        for position, (row, entry) in enumerate(zip(order, entries, strict=True)):
            found = [shard[position] for shard in answers] + in_batch.query([entry])
            results[row] = self._verdict(found)
            if results[row] is None:
                results[row] = {}
                kept.append(entry)
                in_batch.add([entry])
        self._index.commit(indexes, kept)
        return results

    def _verdict(self, answers: list[Answer]) -> Duplicate | None:
        exact = next((a.exact for a in answers if a.exact is not None), None)
        if self.config.exact and exact is not None:
            return Duplicate(of=exact, kind="exact")
        near = [a.near for a in answers if a.near is not None]
        if self.config.near and near:
            return Duplicate(of=min(near, key=lambda match: match[1])[0], kind="near")
        similar = [a.similar for a in answers if a.similar is not None]
        if similar:
            return Duplicate(of=max(similar, key=lambda match: match[1])[0], kind="near")
        return None


def _entry(row: dict[str, Any]) -> Entry:
    phash = int(row["phash"], 16)
    return Entry(row["uri"], row["content_sha256"], phash, row.get("embedding"))
