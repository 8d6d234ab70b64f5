"""Near-hash lookup: a 64-bit hash within `threshold` bits of a stored one.

Pigeonhole: if two hashes differ in at most t bits, some 16-bit band differs in at most
t // 4 bits, so probing each band's neighbours within that radius finds every match. A
band key (band, value) is the unit of sharding: a shard stores only the keys it owns
(`band_owner`), and a probe of a key it does not own is a cheap miss.
"""

from __future__ import annotations

import itertools
from array import array

import numpy as np

HASH_BITS = 64
BANDS = 4
BAND_BITS = HASH_BITS // BANDS
_BAND_MASK = (1 << BAND_BITS) - 1
_MIX = 0x9E3779B1  # Fibonacci hashing: neighbouring band values land on different shards


def bands(value: int) -> list[int]:
    return [(value >> (BAND_BITS * i)) & _BAND_MASK for i in range(BANDS)]


def band_owner(band: int, value: int, shards: int) -> int:
    return ((value * _MIX + band) & 0xFFFFFFFF) % shards


def probe_masks(threshold: int) -> list[int]:
    masks = [0]
    for distance in range(1, threshold // BANDS + 1):
        for bits in itertools.combinations(range(BAND_BITS), distance):
            masks.append(sum(1 << bit for bit in bits))
    return masks


class _Bucket:
    """The hashes stored under one band key; crowded ones are compared with numpy.

    Look-alike images (flat backgrounds, one series' scans) share band values, so a few
    buckets grow with the index. Comparing those as one uint64 array keeps a query's cost
    close to flat however full they get.
    """

    __slots__ = ("hashes", "keys", "_array")
    VECTOR_FROM = 24  # below this many entries a Python loop is cheaper than numpy's call

    def __init__(self) -> None:
        # one contiguous buffer, not a list of int objects scattered over the heap: at 1e5
        # images and more a query's cost is mostly cache misses
        self.hashes = array("Q")
        self.keys: list[str] = []
        self._array: np.ndarray | None = None

    def add(self, value: int, key: str) -> None:
        self.hashes.append(value)
        self.keys.append(key)

    def closest(self, value: int, threshold: int, skip: str | None) -> tuple[int, str] | None:
        if len(self.hashes) < self.VECTOR_FROM:
            best = None
            for stored, key in zip(self.hashes, self.keys, strict=True):
                distance = (stored ^ value).bit_count()
                if distance <= threshold and key != skip and (best is None or distance < best[0]):
                    best = (distance, key)
            return best
        if self._array is None:
            self._array = np.frombuffer(self.hashes, dtype=np.uint64).copy()
        elif len(self._array) < len(self.hashes):  # only the additions are converted
            added = np.frombuffer(self.hashes, dtype=np.uint64)[len(self._array) :]
            self._array = np.concatenate([self._array, added])
        distances = np.bitwise_count(self._array ^ np.uint64(value))
        within = np.flatnonzero(distances <= threshold)
        for position in within[np.argsort(distances[within], kind="stable")][:2]:
            if self.keys[position] != skip:  # the closest, or the next past `skip`
                return int(distances[position]), self.keys[position]
        return None


class HammingIndex:
    """The band keys of one shard (`shard` of `shards`); one shard of one holds them all."""

    def __init__(self, threshold: int, shard: int = 0, shards: int = 1):
        self.threshold, self.shard, self.shards = threshold, shard, shards
        self._tables: list[dict[int, _Bucket]] = [{} for _ in range(BANDS)]
        self._masks = probe_masks(threshold)
        self.entries = 0  # band entries held: up to BANDS per image

    def add(self, value: int, key: str) -> None:
        for band, chunk in enumerate(bands(value)):
            if band_owner(band, chunk, self.shards) == self.shard:
                table = self._tables[band]
                bucket = table.get(chunk)
                if bucket is None:
                    bucket = table[chunk] = _Bucket()
                bucket.add(value, key)
                self.entries += 1

    def nearest(self, value: int, skip: str | None = None) -> tuple[str, int] | None:
        """The closest stored key within the threshold (ties: the first found), except
        `skip` (a row meeting its own entry from an earlier attempt)."""
        threshold, best_distance, best_key = self.threshold, self.threshold + 1, None
        for band, chunk in enumerate(bands(value)):
            table = self._tables[band]
            for mask in self._masks:
                bucket = table.get(chunk ^ mask)
                if bucket is None:
                    continue
                if len(bucket.hashes) >= _Bucket.VECTOR_FROM:
                    found = bucket.closest(value, threshold, skip)
                    if found is not None and found[0] < best_distance:
                        best_distance, best_key = found
                    continue
                # inline, no call per bucket: most buckets hold one or two hashes
                for position, stored in enumerate(bucket.hashes):
                    distance = (stored ^ value).bit_count()
                    if distance < best_distance and bucket.keys[position] != skip:
                        best_distance, best_key = distance, bucket.keys[position]
        return None if best_key is None else (best_key, best_distance)


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

    def nearest(self, vector: np.ndarray, skip: str | None = None) -> tuple[str, float] | None:
        if self._pending:  # stack once per batch of additions, not per query
            stacked = np.stack(self._pending)
            self._matrix = stacked if self._matrix is None else np.vstack([self._matrix, stacked])
            self._pending = []
        if self._matrix is None:
            return None
        similarities = self._matrix @ np.asarray(vector, dtype=np.float32)
        for best in np.argsort(-similarities)[:2]:  # the best, or the next past `skip`
            score = float(similarities[best])
            if score < self.threshold:
                return None
            if self._keys[best] != skip:
                return self._keys[best], score
        return None
