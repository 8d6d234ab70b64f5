"""The OCR engine: accuracy on printed museum labels, boxes, reading order, filtering.

The rapidocr engine is built once for the module (about a second) and each generated
label is read once (about half a second each); the tests share those readings.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from factory.models import ocr
from factory.models.ocr import OcrEngine, OcrLine, normalised_box, reading_order
from factory.stages.ocr import OcrConfig
from tests.ocrgen import label_image, label_images

LABEL_COUNT = 20
MAX_CER = 0.05


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


def squash(text: str) -> str:
    return " ".join(text.split())


def text_of(lines: list[OcrLine]) -> str:
    return "\n".join(line.text for line in lines)


@pytest.fixture(scope="module")
def engine() -> OcrEngine:
    return OcrEngine(OcrConfig())


@pytest.fixture(scope="module")
def labels() -> list[tuple[np.ndarray, str]]:
    return label_images(LABEL_COUNT)


@pytest.fixture(scope="module")
def readings(engine, labels) -> list[list[OcrLine]]:
    return [engine.read(image) for image, _ in labels]


def test_character_error_rate_on_printed_labels_is_under_5_percent(labels, readings):
    expected = [squash(text) for _, text in labels]
    found = [squash(text_of(lines)) for lines in readings]
    edits = sum(edit_distance(got, want) for got, want in zip(found, expected, strict=True))
    chars = sum(len(want) for want in expected)
    cer = edits / chars
    worst = max(zip(found, expected, strict=True), key=lambda pair: edit_distance(*pair))
    assert cer < MAX_CER, f"CER {cer:.2%} over {len(labels)} labels; worst: {worst}"


def test_boxes_lie_in_the_unit_square(readings):
    boxes = [line.box for lines in readings for line in lines]
    assert boxes
    for x0, y0, x1, y1 in boxes:
        assert 0.0 <= x0 < x1 <= 1.0
        assert 0.0 <= y0 < y1 <= 1.0


def test_lines_come_top_to_bottom_in_label_order(labels, readings):
    for (_, expected), lines in zip(labels, readings, strict=True):
        centres = [(line.box[1] + line.box[3]) / 2 for line in lines]
        assert centres == sorted(centres)
        assert len(lines) == len(expected.splitlines())


def test_box_covers_the_text_where_it_was_printed(engine):
    image, _ = label_image(0)
    padded = np.full((image.shape[0] * 2, image.shape[1], 3), 240, np.uint8)
    padded[image.shape[0] :] = image  # the label now fills the lower half only
    lines = engine.read(padded)
    assert lines
    assert all(line.box[1] > 0.5 for line in lines)


def test_blank_image_has_no_lines(engine):
    rng = np.random.default_rng(3)
    paper = np.clip(rng.normal(232, 4, (360, 520, 3)), 0, 255).astype(np.uint8)
    assert engine.read(paper) == []


def test_read_refuses_non_rgb_arrays(engine):
    with pytest.raises(ValueError, match="RGB uint8"):
        engine.read(np.zeros((40, 40), np.uint8))


def quad(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float32)


def fake_backend(monkeypatch, raw_lines: list[ocr.RawLine]) -> None:
    monkeypatch.setitem(ocr.BACKENDS, "rapidocr", lambda config: lambda bgr: list(raw_lines))


def test_min_score_drops_low_confidence_lines(monkeypatch):
    fake_backend(
        monkeypatch,
        [("sure", 0.95, quad(10, 10, 90, 30)), ("unsure", 0.40, quad(10, 50, 90, 70))],
    )
    image = np.zeros((100, 100, 3), np.uint8)
    kept = OcrEngine(OcrConfig(min_score=0.5)).read(image)
    everything = OcrEngine(OcrConfig(min_score=0.0)).read(image)
    assert [line.text for line in kept] == ["sure"]
    assert [line.text for line in everything] == ["sure", "unsure"]


def test_full_width_forms_fold_to_ascii_and_empty_lines_go(monkeypatch):
    fake_backend(
        monkeypatch,
        [("Inv．（１９３６）", 0.9, quad(0, 0, 50, 10)), ("  ", 0.9, quad(0, 20, 50, 30))],
    )
    lines = OcrEngine(OcrConfig()).read(np.zeros((40, 50, 3), np.uint8))
    assert [line.text for line in lines] == ["Inv.(1936)"]


def test_engine_hands_the_backend_bgr(monkeypatch):
    seen: list[np.ndarray] = []
    monkeypatch.setitem(ocr.BACKENDS, "rapidocr", lambda config: lambda bgr: seen.append(bgr) or [])
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    OcrEngine(OcrConfig()).read(red)
    assert seen[0][0, 0].tolist() == [0, 0, 255]


def test_normalised_box_clips_to_the_image():
    corners = np.array([[-5, 10], [210, 8], [212, 40], [-4, 42]], dtype=np.float32)
    assert normalised_box(corners, width=200, height=100) == pytest.approx((0.0, 0.08, 1.0, 0.42))


def line_at(text: str, x0: float, y0: float, x1: float, y1: float) -> OcrLine:
    return OcrLine(text, 0.9, (x0, y0, x1, y1))


def test_reading_order_groups_rows_then_goes_left_to_right():
    shuffled = [
        line_at("Oil on canvas", 0.1, 0.50, 0.4, 0.56),
        line_at("1889", 0.6, 0.19, 0.7, 0.25),  # a little higher than the title beside it
        line_at("Vincent van Gogh", 0.1, 0.10, 0.5, 0.16),
        line_at("The Starry Night", 0.1, 0.20, 0.5, 0.26),
    ]
    ordered = [line.text for line in reading_order(shuffled)]
    assert ordered == ["Vincent van Gogh", "The Starry Night", "1889", "Oil on canvas"]


def test_lines_a_line_height_apart_are_separate_rows():
    lines = [line_at("second", 0.0, 0.30, 0.3, 0.40), line_at("first", 0.5, 0.18, 0.8, 0.28)]
    assert [line.text for line in reading_order(lines)] == ["first", "second"]


# --- paddleocr -------------------------------------------------------------------------


def paddle_models(root: Path) -> Path:
    for name in ("PP-OCRv5_server_det", "PP-OCRv5_server_rec", "PP-LCNet_x1_0_textline_ori"):
        (root / name).mkdir()
    return root


def test_paddleocr_backend_without_the_package_names_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "paddleocr", None)  # makes `import paddleocr` fail
    config = OcrConfig(backend="paddleocr", model_dir=str(paddle_models(tmp_path)))
    with pytest.raises(ocr.OcrBackendUnavailableError, match=r"caption-factory\[paddleocr\]"):
        OcrEngine(config)


class FakePaddleOCR:
    """Records how it was built; `predict` answers like PaddleOCR 3 does."""

    built_with: dict = {}

    def __init__(self, **kwargs):
        FakePaddleOCR.built_with = kwargs

    def predict(self, image):
        return [
            {
                "rec_texts": ["second line", "first line"],
                "rec_scores": [0.9, 0.8],
                "rec_polys": [quad(10, 60, 180, 80), quad(10, 10, 180, 30)],
            }
        ]


def test_paddleocr_backend_uses_only_the_local_model_folders(monkeypatch, tmp_path):
    fake = types.ModuleType("paddleocr")
    fake.PaddleOCR = FakePaddleOCR
    monkeypatch.setitem(sys.modules, "paddleocr", fake)
    root = paddle_models(tmp_path)
    engine = OcrEngine(OcrConfig(backend="paddleocr", model_dir=str(root)))
    lines = engine.read(np.zeros((100, 200, 3), np.uint8))
    built = FakePaddleOCR.built_with
    assert built["text_detection_model_dir"] == str(root / "PP-OCRv5_server_det")
    assert built["text_recognition_model_dir"] == str(root / "PP-OCRv5_server_rec")
    assert built["text_detection_model_name"] == "PP-OCRv5_server_det"
    assert built["use_textline_orientation"] is False
    assert [line.text for line in lines] == ["first line", "second line"]
    assert lines[0].box == pytest.approx((0.05, 0.1, 0.9, 0.3))


def test_paddleocr_model_dir_without_a_recogniser_is_refused(tmp_path):
    (tmp_path / "PP-OCRv5_server_det").mkdir()
    with pytest.raises(FileNotFoundError, match="_rec"):
        ocr.paddle_model_dirs(str(tmp_path))


PADDLE_MODELS = os.environ.get("FACTORY_PADDLEOCR_MODELS")


@pytest.mark.skipif(
    importlib.util.find_spec("paddleocr") is None or not PADDLE_MODELS,
    reason="needs paddleocr installed and FACTORY_PADDLEOCR_MODELS=<local model folder>",
)
def test_real_paddleocr_reads_a_printed_label():
    engine = OcrEngine(OcrConfig(backend="paddleocr", model_dir=PADDLE_MODELS))
    image, expected = label_image(0)
    found = squash(text_of(engine.read(image)))
    assert edit_distance(found, squash(expected)) / len(squash(expected)) < MAX_CER
