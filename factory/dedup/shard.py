"""One shard of the dedup index: the hashes of accepted images whose keys it owns.

An accepted image is stored under its sha256 (exact) on one shard and under each of its
four pHash band keys (near) on the band key's owner, so a shard holds about
(1 + 4) / shards entries per image, however many images there are. A query asks every
shard: each answers from the keys it holds, and the caller takes the best answer.
Embeddings (the optional embedding mode) all live on shard 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from factory.dedup.hamming import EmbeddingIndex, HammingIndex

SEED_COLUMNS = ["uri", "content_sha256", "phash"]


@dataclass(frozen=True)
class Entry:
    """What the index knows of an image: its URI and hashes (never its bytes)."""

    uri: str
    sha: str
    phash: int
    embedding: Any = None  # a unit vector, only in the embedding mode

    def compact(self) -> Entry:
        """The entry without its embedding, for the shards that hold no embeddings."""
        return Entry(self.uri, self.sha, self.phash)


@dataclass(frozen=True)
class Answer:
    """One shard's best matches for one query entry (None: nothing within threshold)."""

    exact: str | None = None
    near: tuple[str, int] | None = None  # (uri, Hamming distance)
    similar: tuple[str, float] | None = None  # (uri, cosine similarity)


def sha_owner(sha: str, shards: int) -> int:
    return int(sha[:8], 16) % shards


class IndexShard:
    def __init__(
        self,
        threshold: int,
        shard: int = 0,
        shards: int = 1,
        embedding_similarity: float | None = None,
    ):
        self.shard, self.shards = shard, shards
        self._exact: dict[str, str] = {}
        self._near = HammingIndex(threshold, shard, shards)
        holds_embeddings = embedding_similarity is not None and shard == 0
        self._similar = EmbeddingIndex(embedding_similarity) if holds_embeddings else None

    def add(self, entries: list[Entry]) -> None:
        for entry in entries:
            if sha_owner(entry.sha, self.shards) == self.shard:
                self._exact.setdefault(entry.sha, entry.uri)
            self._near.add(entry.phash, entry.uri)
            if self._similar is not None and entry.embedding is not None:
                self._similar.add(np.asarray(entry.embedding), entry.uri)

    def query(self, entries: list[Entry]) -> list[Answer]:
        return [self._answer(entry) for entry in entries]

    def _answer(self, entry: Entry) -> Answer:
        exact = self._exact.get(entry.sha)
        similar = None
        if self._similar is not None and entry.embedding is not None:
            similar = self._similar.nearest(np.asarray(entry.embedding), skip=entry.uri)
        return Answer(
            exact=None if exact == entry.uri else exact,  # its own entry, from a retried task
            near=self._near.nearest(entry.phash, skip=entry.uri),
            similar=similar,
        )

    def seed(self, output: str) -> int:
        """Add the images already accepted into `output` (a resumed run); returns how many."""
        from factory.io.outputs import read_output_batches

        seen = 0
        columns = SEED_COLUMNS + ["embedding"] * (self._similar is not None)
        for batch in read_output_batches(output, "captions", columns):
            rows = batch.to_pylist()
            self.add([_entry(row) for row in rows])
            seen += len(rows)
        return seen

    def stats(self) -> dict[str, int]:
        return {"exact_entries": len(self._exact), "band_entries": self._near.entries}


def _entry(row: dict[str, Any]) -> Entry:
    phash = int(row["phash"], 16)
    return Entry(row["uri"], row["content_sha256"], phash, row.get("embedding"))
