"""OCR engines: PP-OCR text lines with scores and normalised boxes, in reading order.

The only module that imports rapidocr, paddleocr or onnxruntime, and only inside the
backend that is chosen, so importing it stays light. Two backends run the same PP-OCR
detection + recognition models:
- `rapidocr` (default): the ONNX weights ship inside the rapidocr wheel; works offline.
- `paddleocr`: PaddlePaddle with PaddleOCR model folders from local disk (`model_dir`);
  never downloads.

Both hand back (text, score, quadrilateral in pixels); the engine turns those into
`OcrLine`s: score-filtered, boxes normalised to [0, 1], lines sorted top-to-bottom and
left-to-right.
"""

from __future__ import annotations

import os
import statistics
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

# Lines whose vertical centres differ by at most this fraction of the line height are
# read as one row (a caption beside a date, words the detector split apart).
SAME_ROW_FRACTION = 0.5
PADDLE_INSTALL_HINT = (
    "pip install 'caption-factory[paddleocr]' (the paddleocr and paddlepaddle packages)"
)


@dataclass(frozen=True)
class OcrLine:
    """One recognised line of text."""

    text: str
    score: float
    """Recognition confidence, 0-1."""
    box: tuple[float, float, float, float]
    """(x0, y0, x1, y1): bounds of the detected quadrilateral as fractions of width/height."""


class OcrSettings(Protocol):
    """What an engine reads from its config (the OCR stage's config satisfies it)."""

    backend: str
    min_score: float
    model_dir: str | None

    def cpu_threads(self) -> int: ...


class OcrBackendUnavailableError(ImportError):
    """The configured OCR backend's package is not installed."""


# text, score, 4x2 corner points in pixels
RawLine = tuple[str, float, np.ndarray]
Recogniser = Callable[[np.ndarray], list[RawLine]]


class OcrEngine:
    """Reads the text lines of RGB images with the configured backend, loaded once."""

    def __init__(self, config: OcrSettings):
        if config.backend not in BACKENDS:
            raise ValueError(f"unknown OCR backend {config.backend!r}; one of {sorted(BACKENDS)}")
        self.backend = config.backend
        self.min_score = config.min_score
        self._recognise: Recogniser = BACKENDS[config.backend](config)

    def read(self, image: np.ndarray) -> list[OcrLine]:
        """Lines of an RGB uint8 image (H x W x 3), in reading order, scores >= min_score."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 image, got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        # Both backends follow OpenCV and take arrays in BGR order.
        bgr = np.ascontiguousarray(image[:, :, ::-1])
        lines = [
            OcrLine(_clean(text), float(score), normalised_box(quad, width, height))
            for text, score, quad in self._recognise(bgr)
            if score >= self.min_score
        ]
        return reading_order([line for line in lines if line.text])


def _clean(text: str) -> str:
    # The PP-OCR recognisers also read Chinese: their character sets hold full-width
    # punctuation and digits ("（", "：", "１") beside the ASCII ones, and either may come
    # out for Latin text. NFKC folds the full-width forms to ASCII.
    return unicodedata.normalize("NFKC", text).strip()


def normalised_box(quad: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    """Axis-aligned bounds of a pixel quadrilateral, as fractions of the image, in [0, 1]."""
    points = np.asarray(quad, dtype=np.float64).reshape(-1, 2)
    x0, y0 = points.min(axis=0)
    x1, y1 = points.max(axis=0)
    scaled = (x0 / width, y0 / height, x1 / width, y1 / height)
    return tuple(float(min(1.0, max(0.0, value))) for value in scaled)  # type: ignore[return-value]


def reading_order(lines: Sequence[OcrLine]) -> list[OcrLine]:
    """Top-to-bottom by row, left-to-right within a row.

    A row gathers lines whose vertical centre lies within SAME_ROW_FRACTION of a line
    height of the row's centre, so slightly tilted or ragged lines still share a row.
    """
    rows: list[list[OcrLine]] = []
    for line in sorted(lines, key=_centre_y):
        if rows and _in_row(rows[-1], line):
            rows[-1].append(line)
        else:
            rows.append([line])
    return [line for row in rows for line in sorted(row, key=lambda each: each.box[0])]


def _centre_y(line: OcrLine) -> float:
    return (line.box[1] + line.box[3]) / 2


def _height(line: OcrLine) -> float:
    return line.box[3] - line.box[1]


def _in_row(row: list[OcrLine], line: OcrLine) -> bool:
    row_centre = statistics.fmean(_centre_y(member) for member in row)
    row_height = statistics.fmean(_height(member) for member in row)
    line_height = (row_height + _height(line)) / 2
    return abs(_centre_y(line) - row_centre) <= SAME_ROW_FRACTION * line_height


# --- rapidocr ------------------------------------------------------------------------


def rapidocr_params(threads: int) -> dict[str, Any]:
    """RapidOCR settings the factory uses (the benchmark's raw loop uses the same)."""
    return {
        # We filter by min_score ourselves, the same way for every backend.
        "Global.text_score": 0.0,
        # "No text found" is a warning per image otherwise; most artworks have no text.
        "Global.log_level": "error",
        # One actor per reserved CPU: more threads than CPUs only fight each other.
        "EngineConfig.onnxruntime.intra_op_num_threads": threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
    }


def _rapidocr(config: OcrSettings) -> Recogniser:
    import cv2
    from rapidocr import RapidOCR

    # OpenCV (resizing, crops) would otherwise start a thread per core of the machine in
    # every actor; it gets the actor's share, like onnxruntime.
    cv2.setNumThreads(config.cpu_threads())
    engine = RapidOCR(params=rapidocr_params(config.cpu_threads()))
    # RapidOCR loads its three models on first use; load them now so a broken install
    # fails the actor at start instead of rejecting every record it is given.
    for load in (engine._load_det_model, engine._load_cls_model, engine._load_rec_model):
        load()

    def recognise(bgr: np.ndarray) -> list[RawLine]:
        result = engine(bgr)
        if result.txts is None or result.boxes is None or result.scores is None:
            return []
        return list(zip(result.txts, result.scores, result.boxes, strict=True))

    return recognise


# --- paddleocr -----------------------------------------------------------------------


@dataclass(frozen=True)
class PaddleModelDirs:
    detection: Path
    recognition: Path


def paddle_model_dirs(model_dir: str | None) -> PaddleModelDirs:
    """Find the detection and recognition model folders inside `model_dir`.

    `model_dir` holds one folder named `det` or ending in `_det` and one named `rec` or
    ending in `_rec`, e.g. a copy of PaddleOCR's `official_models` with
    `PP-OCRv5_server_det/` and `PP-OCRv5_server_rec/`.
    """
    if not model_dir:
        raise ValueError("the paddleocr backend needs model_dir: a folder of local models")
    root = Path(model_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"paddleocr model_dir {str(root)!r} is not a folder")
    return PaddleModelDirs(_one_model(root, "det"), _one_model(root, "rec"))


def _one_model(root: Path, kind: str) -> Path:
    found = sorted(
        child
        for child in root.iterdir()
        if child.is_dir() and (child.name == kind or child.name.endswith(f"_{kind}"))
    )
    if len(found) != 1:
        names = sorted(child.name for child in root.iterdir())
        raise FileNotFoundError(
            f"paddleocr model_dir {str(root)!r} needs exactly one folder named {kind!r} or "
            f"ending in '_{kind}'; it has {names}"
        )
    return found[0]


def _model_name(folder: Path) -> str | None:
    # PaddleOCR's own folder names are model names; a plain det/rec folder lets
    # PaddleOCR read the name from the model's own config.
    return None if folder.name in ("det", "rec") else folder.name


def _import_paddleocr() -> Any:
    # Offline clusters: skip PaddleX's start-up probe of the model download hosts.
    os.environ.setdefault("PADDLE_PDX_DISABLE_MODEL_SOURCE_CHECK", "True")
    try:
        import paddleocr
    except ImportError as error:
        raise OcrBackendUnavailableError(
            f"OCR backend 'paddleocr' is not installed ({error}); {PADDLE_INSTALL_HINT}, "
            "or use backend 'rapidocr'"
        ) from error
    return paddleocr


def _paddleocr(config: OcrSettings) -> Recogniser:
    paddleocr = _import_paddleocr()
    dirs = paddle_model_dirs(config.model_dir)
    engine = paddleocr.PaddleOCR(
        text_detection_model_name=_model_name(dirs.detection),
        text_detection_model_dir=str(dirs.detection),
        text_recognition_model_name=_model_name(dirs.recognition),
        text_recognition_model_dir=str(dirs.recognition),
        # Each of these would need (and download) a further model.
        use_doc_orientation_classify=False,
        use_doc_unwarping=False,
        use_textline_orientation=False,
        text_rec_score_thresh=0.0,
        device="cpu",
        cpu_threads=config.cpu_threads(),
    )

    def recognise(bgr: np.ndarray) -> list[RawLine]:
        lines: list[RawLine] = []
        for result in engine.predict(bgr):
            texts, scores, polys = result["rec_texts"], result["rec_scores"], result["rec_polys"]
            lines.extend(zip(texts, scores, polys, strict=True))
        return lines

    return recognise


BACKENDS: dict[str, Callable[[OcrSettings], Recogniser]] = {
    "rapidocr": _rapidocr,
    "paddleocr": _paddleocr,
}
