"""OCR stage: typed columns, text found on a real manuscript page, rejected rows untouched."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from pydantic import ValidationError

from factory import records
from factory.io.images import ImageLimits, normalise_image
from factory.prompts.fusion import auxiliary_block
from factory.stage_kit.contract import MissingColumnsError
from factory.stages.ocr import OCR_LINE_TYPE, OcrConfig, OcrStage
from tests.helpers import listing
from tests.ocrgen import label_image

SAMPLES = Path(__file__).resolve().parents[2] / "factory" / "samples"
ARATEA = SAMPLES / "leiden_aratea_fol3v_4r.jpg"
# Words of the Latin verse in capitals on fol. 4r that PP-OCR reads cleanly at 1024 px, in
# the poem's line order. Four of five must be found, so one misread word does not fail.
ARATEA_WORDS = ("CAELUM", "SEMPER", "TERRAS", "AQUILONE", "COGNOMINIS")


def normalised(data: bytes) -> bytes:
    """The `image` bytes the validate stage would hand on (long side at most 1024)."""
    return normalise_image(data, ImageLimits()).data


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def batch(images: dict[str, bytes | None]) -> pa.Table:
    table = listing(list(images))
    return table.append_column("image", pa.array(list(images.values()), pa.binary()))


@pytest.fixture(scope="module")
def stage() -> OcrStage:
    return OcrStage(OcrConfig())


@pytest.fixture(scope="module")
def aratea_row(stage) -> dict:
    out = stage(batch({"aratea": normalised(ARATEA.read_bytes())}))
    return out.to_pylist()[0]


def test_stage_adds_typed_columns_and_passes_rejected_rows_through(stage):
    label, expected = label_image(1)
    blank = np.full((200, 300, 3), 235, np.uint8)
    table = batch({"label": normalised(png(label)), "blank": normalised(png(blank)), "bad": None})
    position = table.column_names.index
    table = table.set_column(position("status"), "status", pa.array(["ok", "ok", records.REJECTED]))
    table = table.set_column(position("reason"), "reason", pa.array([None, None, "corrupt"]))

    out = stage(table)

    assert out.schema.field("ocr").type == pa.list_(OCR_LINE_TYPE)
    assert out.schema.field("ocr_text").type == pa.string()
    assert out.column("status").to_pylist() == ["ok", "ok", records.REJECTED]
    label_row, blank_row, bad_row = out.to_pylist()
    assert label_row["ocr_text"].split() == expected.split()
    assert all(0.5 <= line["score"] <= 1.0 for line in label_row["ocr"])
    assert blank_row["ocr"] == [] and blank_row["ocr_text"] is None
    assert bad_row["ocr"] is None and bad_row["ocr_text"] is None
    assert bad_row["reason"] == "corrupt" and bad_row["reject_stage"] is None


def test_text_on_a_shipped_manuscript_page_is_found(aratea_row):
    found = [word for word in ARATEA_WORDS if word in aratea_row["ocr_text"]]
    assert len(found) >= 4, aratea_row["ocr_text"]


def test_manuscript_verse_is_located_and_read_in_order(aratea_row):
    verse = [line for line in aratea_row["ocr"] if any(w in line["text"] for w in ARATEA_WORDS)]
    assert verse
    assert all(line["box"][0] > 0.5 for line in verse)  # fol. 4r is the right-hand page
    text = aratea_row["ocr_text"]
    positions = [text.index(word) for word in ARATEA_WORDS if word in text]
    assert positions == sorted(positions)  # the words come in the poem's line order


def test_found_text_reaches_the_fusion_prompt(aratea_row):
    block = auxiliary_block(aratea_row)
    assert "- text in the image:" in block
    assert "CAELUM" in block


def test_an_undecodable_image_is_rejected_not_fatal(stage):
    out = stage(batch({"junk": b"not an image"}))
    row = out.to_pylist()[0]
    assert row["status"] == records.REJECTED
    assert row["reject_stage"] == "ocr" and row["ocr"] is None


def test_stage_without_an_image_column_fails_loudly(stage):
    with pytest.raises(MissingColumnsError, match="image"):
        stage(listing(["a"]))


def test_default_config_runs_one_actor_with_one_inference_thread():
    config = OcrConfig()
    assert (config.backend, config.min_score, config.model_dir) == ("rapidocr", 0.5, None)
    resources = config.resources
    assert (resources.compute, resources.concurrency) == ("actors", 1)
    assert 0 < resources.num_cpus <= 1
    assert config.cpu_threads() == 1


def test_cpu_threads_follow_the_reserved_cpus():
    assert OcrConfig(resources={"compute": "actors", "num_cpus": 4}).cpu_threads() == 4
    assert OcrConfig(resources={"compute": "actors", "num_cpus": 0.5}).cpu_threads() == 1


def test_paddleocr_needs_local_model_folders():
    with pytest.raises(ValidationError, match="model_dir"):
        OcrConfig(backend="paddleocr")
    with pytest.raises(ValidationError):
        OcrConfig(min_score=1.5)
