"""The fingerprint stage: a 64-bit DCT perceptual hash of each validated image.

It runs wide, as tasks beside the decode: the only part of dedup that touches pixels.
Dedup itself (`factory.stages.dedup`) decides from the hashes alone.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pyarrow as pa

from factory.stage_kit.contract import Columns, Row, fixed_columns, map_rows


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
    columns_for = fixed_columns(COLUMNS)

    def __init__(self, config: Any):
        self.config = config  # the run's DedupConfig; the hash itself has no settings

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_rows(batch, self.COLUMNS, self._hash)

    def _hash(self, row: Row) -> Row:
        return {"phash": f"{perceptual_hash(row['image']):016x}"}
