"""ZeroShotDetector: normalised boxes, threshold, NMS and cap; NMS itself on hand-made boxes."""

from __future__ import annotations

import copy
import importlib.util
import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from factory.models.demo import vision as demo_vision
from factory.models.detector import Detection, DetectorSettings, ZeroShotDetector, nms, select

ALL_BOXES = DetectorSettings(score_threshold=0.0, nms_iou=1.0, max_boxes=100)
PATCHES = (demo_vision.IMAGE_SIZE // demo_vision.PATCH_SIZE) ** 2  # one box per patch


def _image(width: int, height: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def owlvit_dir(tmp_path_factory) -> str:
    return demo_vision.build_tiny_owlvit(str(tmp_path_factory.mktemp("owlvit") / "m"))


@pytest.fixture(scope="module")
def detector(owlvit_dir) -> ZeroShotDetector:
    return ZeroShotDetector(owlvit_dir, settings=ALL_BOXES)


def _with(detector: ZeroShotDetector, settings: DetectorSettings) -> ZeroShotDetector:
    """The same loaded model under other settings (loading again would cost seconds)."""
    other = copy.copy(detector)
    other.settings = settings
    return other


def _iou(a: tuple, b: tuple) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return overlap / (area - overlap)


# --- NMS on hand-made boxes -------------------------------------------------------------

OVERLAPPING = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9]], float)
SCORES = np.array([0.6, 0.9, 0.7, 0.5])


def test_nms_keeps_the_best_of_overlapping_boxes_best_first():
    # box 1 (0.9) overlaps 0 (IoU 0.68) and 3 (IoU 0.6); 2 overlaps nothing
    assert nms(OVERLAPPING, SCORES, iou_threshold=0.5) == [1, 2]


def test_nms_threshold_decides_what_counts_as_overlap():
    assert nms(OVERLAPPING, SCORES, iou_threshold=0.65) == [1, 2, 3]  # 3 vs 1 is only 0.6
    assert nms(OVERLAPPING, SCORES, iou_threshold=1.0) == [1, 2, 0, 3]  # nothing suppressed


def test_nms_per_label_lets_different_labels_overlap():
    labels = ["horse", "rider", "horse", "horse"]
    assert nms(OVERLAPPING, SCORES, 0.5, groups=labels) == [1, 2, 0]  # 3 loses to horse 0
    assert nms(OVERLAPPING, SCORES, 0.5, groups=None) == [1, 2]


def test_select_thresholds_suppresses_and_caps():
    candidates = [
        Detection("horse", float(score), tuple(box / 40))
        for box, score in zip(OVERLAPPING, SCORES, strict=True)
    ]
    agnostic = DetectorSettings(score_threshold=0.6, nms_iou=0.5, class_agnostic_nms=True)
    assert [d.score for d in select(candidates, agnostic)] == [0.9, 0.7]
    loose = DetectorSettings(score_threshold=0.0, nms_iou=1.0, max_boxes=3)
    assert [d.score for d in select(candidates, loose)] == [0.9, 0.7, 0.6]
    assert select(candidates, DetectorSettings(score_threshold=0.95)) == []


# --- the detector on a tiny random OWL-ViT ----------------------------------------------


def test_boxes_are_normalised_and_labelled_with_the_queries(detector):
    queries = ["a horse", "a vase", "a coin"]
    found = detector.detect(_image(160, 90, 0), queries)
    assert len(found) == PATCHES  # nothing suppressed, nothing below threshold 0
    for detection in found:
        x0, y0, x1, y1 = detection.box
        assert 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0
        assert detection.label in queries and 0.0 < detection.score < 1.0
    scores = [d.score for d in found]
    assert scores == sorted(scores, reverse=True)


def test_boxes_match_the_models_own_normalised_boxes(detector):
    image = _image(160, 90, 1)
    inputs = detector.processor(text=[["a horse"]], images=[image], return_tensors="pt")
    with torch.no_grad():
        centre_x, centre_y, width, height = detector.model(**inputs).pred_boxes[0].T.numpy()
    corners = np.stack([centre_x - width / 2, centre_y - height / 2, centre_x + width / 2,
                        centre_y + height / 2], axis=1).clip(0, 1)  # fmt: skip
    found = np.array(sorted(d.box for d in detector.detect(image, ["a horse"])))
    np.testing.assert_allclose(found, np.array(sorted(map(tuple, corners))), atol=1e-4)


def test_threshold_keeps_only_boxes_at_or_above_it(detector):
    image, queries = _image(100, 100, 2), ["a horse", "a vase"]
    scores = sorted(d.score for d in detector.detect(image, queries))
    threshold = scores[len(scores) // 2]
    settings = DetectorSettings(score_threshold=threshold, nms_iou=1.0, max_boxes=100)
    kept = _with(detector, settings).detect(image, queries)
    assert [d.score for d in kept] == sorted((s for s in scores if s >= threshold), reverse=True)


def test_nms_and_cap_hold_on_model_output(detector):
    image = _image(90, 90, 3)
    settings = DetectorSettings(score_threshold=0.0, nms_iou=0.0, class_agnostic_nms=True)
    found = _with(detector, settings).detect(image, ["a dog"])
    assert 1 <= len(found) < PATCHES
    assert all(_iou(a.box, b.box) <= 0.0 for a, b in itertools.combinations(found, 2))
    capped = _with(detector, DetectorSettings(0.0, 1.0, max_boxes=3))
    assert len(capped.detect(image, ["a dog"])) == 3


def test_batch_gives_what_each_image_gives_alone(detector):
    images = [_image(120, 80, 4), _image(60, 100, 5), _image(80, 80, 6)]
    # lists of different lengths: the processor pads the shorter ones with blank queries
    queries = [["a horse", "a vase", "a coin"], ["a ship"], []]
    batch = detector.detect_batch(images, queries)
    assert batch[2] == []
    assert {d.label for d in batch[1]} == {"a ship"}
    for image, image_queries, found in zip(images, queries, batch, strict=True):
        alone = detector.detect(image, image_queries)
        assert [d.label for d in found] == [d.label for d in alone]
        np.testing.assert_allclose([d.score for d in found], [d.score for d in alone], atol=1e-5)


def test_mismatched_batch_is_refused(detector):
    with pytest.raises(ValueError, match="2 images but 1 query lists"):
        detector.detect_batch([_image(40, 40, 0)] * 2, [["a horse"]])


@pytest.mark.skipif(importlib.util.find_spec("scipy") is None, reason="OWLv2 resizes with scipy")
def test_owlv2_boxes_are_normalised_to_the_unpadded_image(tmp_path):
    owlv2 = ZeroShotDetector(demo_vision.build_tiny_owlv2(str(tmp_path / "m")), settings=ALL_BOXES)
    wide = _image(200, 100, 7)  # OWLv2 pads to 200x200; the lower half is padding
    found = owlv2.detect(wide, ["a horse"])
    assert found and all(0.0 <= v <= 1.0 for d in found for v in d.box)
    # boxes of the padded lower half lie outside the image and are dropped
    assert len(found) < PATCHES
