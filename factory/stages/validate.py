"""Validate stage: check each image's bytes and replace them with a normalised RGB image.

Rows arrive with the raw file in `data`; they leave with `image` (re-encoded, at most
`max_side` on the long side), content hashes for dedup and lineage, and what the source
looked like. `data` is dropped so raw files do not travel further down the pipeline.
Unusable images become rejected rows with the reason codes of `factory.io.images`.
"""

from __future__ import annotations

import hashlib

import pyarrow as pa
from pydantic import Field

from factory.io.images import WEBP_MAX_SIDE, ImageLimits, OutputFormat, normalise_image
from factory.stage_kit.contract import (
    CHEAP_TASKS,
    Columns,
    Resources,
    Row,
    StageConfig,
    fixed_columns,
    map_rows,
)

_DEFAULT = ImageLimits()
IMAGE_ID_HEX_CHARS = 20


class ValidateConfig(StageConfig):
    """Limits an input image must meet and the shape it is normalised to."""

    max_bytes: int = Field(_DEFAULT.max_bytes, ge=1, description="largest file accepted, bytes")
    max_pixels: int = Field(
        _DEFAULT.max_pixels,
        ge=1,
        description="largest width x height accepted; checked from the header before decoding",
    )
    min_side: int = Field(_DEFAULT.min_side, ge=1, description="smallest width or height, px")
    max_aspect_ratio: float = Field(
        _DEFAULT.max_aspect_ratio, ge=1, description="largest long side / short side accepted"
    )
    max_side: int = Field(
        _DEFAULT.max_side,
        ge=1,
        le=WEBP_MAX_SIDE,
        description="long side of the normalised image; larger images shrink, none grow",
    )
    output_format: OutputFormat = Field(
        _DEFAULT.output_format, description="encoding of the normalised image"
    )
    jpeg_quality: int = Field(
        _DEFAULT.jpeg_quality, ge=1, le=95, description="jpeg (and lossy webp) quality"
    )

    resources: Resources = Field(default_factory=lambda: CHEAP_TASKS.model_copy())

    def limits(self) -> ImageLimits:
        return ImageLimits(**self.model_dump(exclude={"resources"}))


class ValidateStage:
    """Turn raw file bytes into a normalised image plus its hashes and source facts."""

    COLUMNS = Columns(
        stage="validate",
        needs=("uri", "data"),
        adds={
            "image_id": pa.string(),
            "content_sha256": pa.string(),
            "image": pa.binary(),
            "image_format": pa.string(),
            "width": pa.int32(),
            "height": pa.int32(),
            "source_format": pa.string(),
            "source_mode": pa.string(),
            "source_width": pa.int32(),
            "source_height": pa.int32(),
            "source_bytes": pa.int64(),
            "frames": pa.int32(),
        },
        drops=("data",),
    )
    columns_for = fixed_columns(COLUMNS)

    def __init__(self, config: ValidateConfig):
        self.limits = config.limits()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_rows(batch, self.COLUMNS, self.validate_row)

    def validate_row(self, row: Row) -> Row:
        data = row["data"]
        if data is None:
            # An ok row without bytes means the reader is miswired; map_rows rejects it.
            raise ValueError(f"row for {row['uri']!r} is ok but has no data")
        normalised = normalise_image(data, self.limits)
        digest = hashlib.sha256(data).hexdigest()
        return {
            "image_id": digest[:IMAGE_ID_HEX_CHARS],
            "content_sha256": digest,
            "image": normalised.data,
            "image_format": normalised.format,
            "width": normalised.width,
            "height": normalised.height,
            "source_format": normalised.source_format,
            "source_mode": normalised.source_mode,
            "source_width": normalised.source_width,
            "source_height": normalised.source_height,
            "source_bytes": len(data),
            "frames": normalised.frames,
        }
