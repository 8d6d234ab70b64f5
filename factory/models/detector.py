"""Open-vocabulary boxes: text queries in, labelled boxes normalised to the image out.

Wraps AutoModelForZeroShotObjectDetection for the OWL family (OWL-ViT, OWLv2). Each image
patch proposes one box, labelled with its best-matching query; the processor's own
post-processing turns those into pixel boxes of the original image (it knows that OWLv2
pads to a square and OWL-ViT stretches), and this module normalises, thresholds, runs
non-maximum suppression and keeps the best few.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from transformers import AutoModelForZeroShotObjectDetection

from factory.models.engine import ModelSource
from factory.models.loading import load_pretrained

Box = tuple[float, float, float, float]
# Families whose processor takes one query list per image and labels boxes by query index.
SUPPORTED_MODEL_TYPES = frozenset({"owlvit", "owlv2"})


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: Box
    """(x0, y0, x1, y1) as fractions of the image's width and height, within [0, 1]."""


@dataclass(frozen=True)
class DetectorSettings:
    score_threshold: float = 0.1
    """Keep boxes scoring at least this (sigmoid of the box's best query logit)."""
    nms_iou: float = 0.5
    """Suppress a box that overlaps a higher-scoring kept box by more than this IoU."""
    class_agnostic_nms: bool = False
    """True: boxes of different labels suppress each other; False: only within a label."""
    max_boxes: int = 20
    """Most boxes kept per image, best first."""


class ZeroShotDetector:
    """Loads an OWL-family checkpoint once; detects text queries in images."""

    def __init__(
        self,
        model: str,
        source: ModelSource | None = None,
        *,
        settings: DetectorSettings | None = None,
    ):
        self.settings = settings or DetectorSettings()
        loaded = load_pretrained(
            AutoModelForZeroShotObjectDetection, model, source or ModelSource()
        )
        self.device, self.processor, self.model = loaded.device, loaded.processor, loaded.model
        if self.model.config.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"zero-shot detector {model!r} is a {self.model.config.model_type!r} model; "
                f"supported: {sorted(SUPPORTED_MODEL_TYPES)}"
            )
        self.model.to(self.device).eval()

    def detect(self, image: Image.Image, queries: Sequence[str]) -> list[Detection]:
        """Boxes for `queries` in `image`, best first."""
        return self.detect_batch([image], [queries])[0]

    def detect_batch(
        self, images: Sequence[Image.Image], queries: Sequence[Sequence[str]]
    ) -> list[list[Detection]]:
        """One forward for all images; each image has its own query list (may be empty)."""
        if len(images) != len(queries):
            raise ValueError(f"{len(images)} images but {len(queries)} query lists")
        asked = [i for i, image_queries in enumerate(queries) if image_queries]
        found: list[list[Detection]] = [[] for _ in images]
        if asked:
            batch = self._raw_detections([images[i] for i in asked], [queries[i] for i in asked])
            for i, candidates in zip(asked, batch, strict=True):
                found[i] = select(candidates, self.settings)
        return found

    def _raw_detections(
        self, images: list[Image.Image], queries: list[Sequence[str]]
    ) -> list[list[Detection]]:
        inputs = self.processor(
            text=[list(image_queries) for image_queries in queries],
            images=images,
            truncation=True,
            return_tensors="pt",
        )
        with torch.inference_mode():
            # BatchFeature.to casts only floating tensors: pixels, not token ids.
            outputs = self.model(**inputs.to(device=self.device, dtype=self.model.dtype))
            _mask_padding_queries(outputs.logits, [len(image_queries) for image_queries in queries])
        results = self.processor.post_process_grounded_object_detection(
            outputs=outputs,
            threshold=0.0,  # `select` applies the threshold, with one meaning everywhere
            target_sizes=[(image.height, image.width) for image in images],
        )
        return [
            _normalised(result, image.size, image_queries)
            for result, image, image_queries in zip(results, images, queries, strict=True)
        ]


def _mask_padding_queries(logits: torch.Tensor, query_counts: list[int]) -> None:
    """Make the blank queries that pad shorter lists lose every box's best-label choice.

    The processor pads every image's list to the longest with blank queries, which the
    model scores like real ones; unmasked, they can win boxes and hide the real labels.
    """
    for image_index, count in enumerate(query_counts):
        logits[image_index, :, count:] = torch.finfo(logits.dtype).min


def _normalised(
    result: dict[str, torch.Tensor], size: tuple[int, int], queries: Sequence[str]
) -> list[Detection]:
    width, height = size
    scale = np.array([width, height, width, height], np.float64)
    boxes = np.clip(result["boxes"].float().cpu().numpy() / scale, 0.0, 1.0)
    scores = result["scores"].float().cpu().numpy()
    labels = result["labels"].cpu().numpy()
    detections = []
    for box, score, label in zip(boxes, scores, labels, strict=True):
        # A box wholly outside the image (zero area once clipped) says nothing about it.
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        detections.append(Detection(queries[label], float(score), _box(box)))
    return detections


def _box(values: np.ndarray) -> Box:
    x0, y0, x1, y1 = (float(value) for value in values)
    return (x0, y0, x1, y1)


def select(candidates: Sequence[Detection], settings: DetectorSettings) -> list[Detection]:
    """Threshold, NMS and cap: the detections worth reporting, best first."""
    kept = [d for d in candidates if d.score >= settings.score_threshold]
    if not kept:
        return []
    boxes = np.array([d.box for d in kept], np.float64)
    scores = np.array([d.score for d in kept], np.float64)
    groups = None if settings.class_agnostic_nms else [d.label for d in kept]
    order = nms(boxes, scores, settings.nms_iou, groups)
    return [kept[i] for i in order[: settings.max_boxes]]


def nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float,
    groups: Sequence[str] | None = None,
) -> list[int]:
    """Indices of the boxes greedy NMS keeps, highest score first.

    A box is dropped when its IoU with a kept, higher-scoring box exceeds `iou_threshold`.
    With `groups`, only boxes of the same group suppress each other (per-label NMS).
    """
    order = np.argsort(-scores, kind="stable")
    areas = _areas(boxes)
    labels = None if groups is None else np.asarray(groups, dtype=object)
    suppressed = np.zeros(len(boxes), bool)
    kept = []
    for index in order:
        if suppressed[index]:
            continue
        kept.append(int(index))
        overlaps = _iou_with(boxes, areas, index) > iou_threshold
        suppressed |= overlaps if labels is None else overlaps & (labels == labels[index])
    return kept


def _areas(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def _iou_with(boxes: np.ndarray, areas: np.ndarray, index: int) -> np.ndarray:
    top_left = np.maximum(boxes[:, :2], boxes[index, :2])
    bottom_right = np.minimum(boxes[:, 2:], boxes[index, 2:])
    overlap = np.clip(bottom_right - top_left, 0, None).prod(axis=1)
    union = areas + areas[index] - overlap
    return np.divide(overlap, union, out=np.zeros_like(overlap), where=union > 0)
