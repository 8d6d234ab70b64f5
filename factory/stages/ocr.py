"""OCR: the text written in each image (labels, inscriptions, signatures, captions).

PP-OCR detection + recognition through `factory.models.ocr`. Each accepted row gets
`ocr`, its text lines with recognition scores and boxes normalised to [0, 1]
(x0, y0, x1, y1) in reading order, and `ocr_text`, the lines joined with newlines
(null when no line passed `min_score`). The captioner's fusion prompt reads `ocr`.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from factory.io.images import decode_rgb
from factory.stage_kit.contract import Columns, Resources, Row, StageConfig, fixed_columns, map_rows

OCR_LINE_TYPE = pa.struct(
    [
        pa.field("text", pa.string()),
        pa.field("score", pa.float32()),
        pa.field("box", pa.list_(pa.float32(), 4)),
    ]
)


class OcrConfig(StageConfig):
    """Which OCR engine reads the images, and which lines it keeps."""

    backend: Literal["rapidocr", "paddleocr"] = Field(
        "rapidocr",
        description="rapidocr: PP-OCR ONNX weights shipped in the wheel, runs offline; "
        "paddleocr: PaddlePaddle with local model folders (model_dir)",
    )
    min_score: float = Field(
        0.5, ge=0.0, le=1.0, description="drop recognised lines scoring below this (0-1)"
    )
    model_dir: str | None = Field(
        None,
        description="paddleocr only: a local folder holding one text detection folder "
        "('det' or '*_det') and one recognition folder ('rec' or '*_rec'); nothing is "
        "downloaded. rapidocr uses the weights inside its package",
    )
    resources: Resources = Field(
        # half a CPU so the offline profile (OCR + captioner + tasks) fits a 2-core machine
        default_factory=lambda: Resources(
            compute="actors", concurrency=1, num_cpus=0.5, batch_size=4
        )
    )

    @model_validator(mode="after")
    def _paddle_needs_models(self) -> OcrConfig:
        if self.backend == "paddleocr" and not self.model_dir:
            raise ValueError("ocr backend 'paddleocr' needs model_dir (local model folders)")
        return self

    def cpu_threads(self) -> int:
        """Inference threads per actor: one per reserved CPU, at least one."""
        return max(1, int(self.resources.num_cpus))


class OcrStage:
    """Adds the text lines found in each accepted image."""

    COLUMNS = Columns(
        stage="ocr",
        needs=("image",),
        adds={"ocr": pa.list_(OCR_LINE_TYPE), "ocr_text": pa.string()},
    )
    columns_for = fixed_columns(COLUMNS)

    def __init__(self, config: OcrConfig):
        from factory.models.ocr import OcrEngine

        self.config = config
        self.engine = OcrEngine(config)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_rows(batch, self.COLUMNS, self._read)

    def _read(self, row: Row) -> Row:
        lines = self.engine.read(np.asarray(decode_rgb(row["image"])))
        return {
            "ocr": [asdict(line) for line in lines],
            "ocr_text": "\n".join(line.text for line in lines) or None,
        }
