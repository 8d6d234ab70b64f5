"""Open-vocabulary boxes for what the tags say is in the image.

The queries of a row are its best tags (from the clip stage) plus fixed extra queries; an
OWL-family detector finds them in one batched forward. Boxes are (x0, y0, x1, y1) fractions
of the image, within [0, 1], best first after NMS. A row with no queries gets no boxes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
from pydantic import Field, field_validator

from factory.io.images import decode_rgb
from factory.models.engine import ModelSource
from factory.prompts import one_placeholder
from factory.stage_kit.contract import (
    Columns,
    Resources,
    Row,
    StageConfig,
    fixed_columns,
    map_batch,
)

if TYPE_CHECKING:
    from factory.models.detector import Detection

OBJECT_TYPE = pa.struct(
    [
        pa.field("label", pa.string()),
        pa.field("score", pa.float32()),
        pa.field("box", pa.list_(pa.float32(), 4)),
    ]
)


class DetectConfig(StageConfig, ModelSource):
    model: str | None = Field(
        None,
        description="OWL-ViT or OWLv2 weights: a local directory, an s3://bucket/prefix "
        "(copied once per node into cache_dir) or builtin://tiny-owlvit (random-weight demo "
        "model); None: the stage is skipped and the run says so",
    )
    queries_from_tags: int = Field(
        10, ge=0, description="query the row's best this many tags (they come sorted)"
    )
    extra_queries: list[str] = Field(
        default_factory=list, description="queries asked of every image, after the tags"
    )
    query_template: str = Field(
        "a photo of a {}", description="text each query is detected as; {} is the label"
    )
    score_threshold: float = Field(
        0.1, ge=0.0, le=1.0, description="keep boxes scoring at least this"
    )
    nms_iou: float = Field(
        0.5, ge=0.0, le=1.0, description="drop a box overlapping a better one by more IoU"
    )
    class_agnostic_nms: bool = Field(
        False, description="let boxes of different labels suppress each other"
    )
    max_boxes: int = Field(20, ge=0, description="keep at most this many boxes per image")
    resources: Resources = Field(
        default_factory=lambda: Resources(compute="actors", concurrency=1, num_cpus=1, batch_size=8)
    )

    @field_validator("query_template")
    @classmethod
    def _one_placeholder(cls, template: str) -> str:
        return one_placeholder(template, "query_template")


class DetectStage:
    COLUMNS = Columns(
        stage="detect",
        needs=("image",),
        optional=("tags",),  # without clip, extra_queries alone can drive detection
        adds={"objects": pa.list_(OBJECT_TYPE)},
    )
    columns_for = fixed_columns(COLUMNS)

    def __init__(self, config: DetectConfig):
        if config.model is None:
            raise ValueError("DetectStage needs config.model; a run without one skips the stage")
        from factory.models.detector import DetectorSettings, ZeroShotDetector

        self.config = config
        settings = DetectorSettings(
            score_threshold=config.score_threshold,
            nms_iou=config.nms_iou,
            class_agnostic_nms=config.class_agnostic_nms,
            max_boxes=config.max_boxes,
        )
        self.detector = ZeroShotDetector(config.model, config, settings=settings)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return map_batch(batch, self.COLUMNS, self._detect)

    def _detect(self, rows: list[Row]) -> list[Row]:
        labels = [self.queries(row) for row in rows]
        asked = [i for i, row_labels in enumerate(labels) if row_labels]
        objects: list[list[Row]] = [[] for _ in rows]
        if asked:
            # Only rows with queries are decoded: the others need nothing from the image.
            images = [decode_rgb(rows[i]["image"]) for i in asked]
            prompts = [self._prompts(labels[i]) for i in asked]
            found = self.detector.detect_batch(images, prompts)
            for i, row_prompts, detections in zip(asked, prompts, found, strict=True):
                objects[i] = _objects(detections, labels[i], row_prompts)
        return [{"objects": row_objects} for row_objects in objects]

    def _prompts(self, labels: list[str]) -> list[str]:
        return [self.config.query_template.format(label) for label in labels]

    def queries(self, row: Row) -> list[str]:
        """The row's best tags, then the extra queries; each label once, in that order."""
        tags = row.get("tags") or []
        best = [tag["label"] for tag in tags[: self.config.queries_from_tags]]
        return list(dict.fromkeys([*best, *self.config.extra_queries]))


def _objects(detections: list[Detection], labels: list[str], prompts: list[str]) -> list[Row]:
    # The detector reports the prompt it matched; the column carries the bare label.
    label_of = dict(zip(prompts, labels, strict=True))
    return [{"label": label_of[d.label], "score": d.score, "box": list(d.box)} for d in detections]
