"""Dedup: exact (content hash) and near (64-bit DCT perceptual hash, Hamming distance).

Two parts. `FingerprintStage` computes the perceptual hash and runs wide. `DedupStage`
holds the index of accepted images, so it runs as exactly one actor; with the pipeline's
order preserved it sees inputs in listing order, which makes "the first occurrence is
kept" deterministic. On a resumed run the index starts from the images already written.
"""

from __future__ import annotations

import io
import itertools
from collections import defaultdict

import numpy as np
import pyarrow as pa
from pydantic import Field

from factory.records import Duplicate
from factory.stages.base import Columns, Resources, Row, StageConfig, map_rows

HASH_BITS = 64
_CHUNKS = 4  # the index splits a hash into 4 x 16-bit chunks
_CHUNK_BITS = HASH_BITS // _CHUNKS


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
        "embeddings reaches this (e.g. 0.95); needs the clip stage; None: off. Compares "
        "against every accepted image, so suited to runs of up to ~1e5 images",
    )
    resources: Resources = Field(
        default_factory=lambda: Resources(compute="actors", concurrency=1, num_cpus=0.1),
        description="the index is global: keep concurrency at 1",
    )


def _dct_matrix(size: int) -> np.ndarray:
    k = np.arange(size)[:, None]
    n = np.arange(size)[None, :]
    matrix = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * np.sqrt(2 / size)
    matrix[0] /= np.sqrt(2)
    return matrix


_DCT32 = _dct_matrix(32)


def perceptual_hash(encoded: bytes) -> int:
    """pHash: DCT of a 32x32 grey thumbnail, low 8x8 frequencies against their median."""
    from PIL import Image

    with Image.open(io.BytesIO(encoded)) as image:
        image.draft("L", (64, 64))  # JPEG decodes at 1/8 scale: far cheaper
        grey = image.convert("L").resize((32, 32), Image.Resampling.LANCZOS)
    pixels = np.asarray(grey, dtype=np.float64)
    low = (_DCT32 @ pixels @ _DCT32.T)[:8, :8].flatten()
    bits = low > np.median(low[1:])  # the DC term would skew the median
    return int(np.packbits(bits).view(">u8")[0])


class FingerprintStage:
    COLUMNS = Columns(stage="fingerprint", needs=("image",), adds={"phash": pa.string()})

    def __init__(self, config: DedupConfig):
        self.config = config

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_rows(batch, self.COLUMNS, self._hash)

    def _hash(self, row: Row) -> Row:
        return {"phash": f"{perceptual_hash(row['image']):016x}"}


class HammingIndex:
    """Finds a stored 64-bit hash within `threshold` bits of a query.

    Pigeonhole: if two hashes differ in at most t bits, some 16-bit chunk differs in at
    most t // 4 bits, so probing each chunk's neighbours within that radius finds every
    match while touching only a small share of the index even at millions of entries.
    """

    def __init__(self, threshold: int):
        self.threshold = threshold
        self._radius = threshold // _CHUNKS
        self._tables: list[dict[int, list[tuple[int, str]]]] = [
            defaultdict(list) for _ in range(_CHUNKS)
        ]
        masks = [0]
        for distance in range(1, self._radius + 1):
            for bits in itertools.combinations(range(_CHUNK_BITS), distance):
                masks.append(sum(1 << bit for bit in bits))
        self._masks = masks

    def add(self, value: int, key: str) -> None:
        for position, chunk in enumerate(self._chunks(value)):
            self._tables[position][chunk].append((value, key))

    def nearest(self, value: int) -> tuple[str, int] | None:
        best: tuple[int, str] | None = None
        for position, chunk in enumerate(self._chunks(value)):
            table = self._tables[position]
            for mask in self._masks:
                for stored, key in table.get(chunk ^ mask, ()):
                    distance = (stored ^ value).bit_count()
                    if distance <= self.threshold and (best is None or distance < best[0]):
                        best = (distance, key)
        return None if best is None else (best[1], best[0])

    @staticmethod
    def _chunks(value: int) -> list[int]:
        mask = (1 << _CHUNK_BITS) - 1
        return [(value >> (_CHUNK_BITS * i)) & mask for i in range(_CHUNKS)]


class EmbeddingIndex:
    """Accepted images' unit embeddings; finds the most similar above a threshold."""

    def __init__(self, threshold: float):
        self.threshold = threshold
        self._keys: list[str] = []
        self._pending: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None

    def add(self, vector: np.ndarray, key: str) -> None:
        self._keys.append(key)
        self._pending.append(np.asarray(vector, dtype=np.float32))

    def nearest(self, vector: np.ndarray) -> tuple[str, float] | None:
        if self._pending:  # stack once per batch of additions, not per query
            stacked = np.stack(self._pending)
            self._matrix = stacked if self._matrix is None else np.vstack([self._matrix, stacked])
            self._pending = []
        if self._matrix is None:
            return None
        similarities = self._matrix @ np.asarray(vector, dtype=np.float32)
        best = int(np.argmax(similarities))
        score = float(similarities[best])
        return (self._keys[best], score) if score >= self.threshold else None


class DedupStage:
    COLUMNS = Columns(
        stage="dedup", needs=("uri", "content_sha256", "phash"), optional=("embedding",)
    )

    def __init__(self, config: DedupConfig, resume_from: str | None = None):
        self.config = config
        self._exact: dict[str, str] = {}
        self._near = HammingIndex(config.hamming_threshold)
        self._similar = (
            EmbeddingIndex(config.embedding_similarity) if config.embedding_similarity else None
        )
        if resume_from is not None:
            self._load_accepted(resume_from)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_rows(batch, self.COLUMNS, self._check)

    def _check(self, row: Row) -> Row | Duplicate:
        sha, phash, uri = row["content_sha256"], int(row["phash"], 16), row["uri"]
        if self.config.exact and sha in self._exact:
            return Duplicate(of=self._exact[sha], kind="exact")
        if self.config.near and (match := self._near.nearest(phash)) is not None:
            return Duplicate(of=match[0], kind="near")
        embedding = row.get("embedding")
        if (similar := self._most_similar(embedding)) is not None:
            return Duplicate(of=similar, kind="near")
        self._remember(uri, sha, phash, embedding)
        return {}

    def _most_similar(self, embedding: list | None) -> str | None:
        if self._similar is None or embedding is None:
            return None
        match = self._similar.nearest(np.asarray(embedding))
        return None if match is None else match[0]

    def _remember(self, uri: str, sha: str, phash: int, embedding: list | None) -> None:
        self._exact.setdefault(sha, uri)
        self._near.add(phash, uri)
        if self._similar is not None and embedding is not None:
            self._similar.add(np.asarray(embedding), uri)

    def _load_accepted(self, output: str) -> None:
        from factory.io.outputs import read_output

        columns = ["uri", "content_sha256", "phash"]
        table = read_output(output, "captions")
        if table is None:
            return
        with_embeddings = "embedding" in table.column_names
        for row in table.select(columns + ["embedding"] * with_embeddings).to_pylist():
            phash = int(row["phash"], 16)
            self._remember(row["uri"], row["content_sha256"], phash, row.get("embedding"))
