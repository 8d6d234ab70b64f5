"""Validate stage: declared columns, reason codes per row, untouched pass-through."""

from __future__ import annotations

import hashlib
import pathlib

import pyarrow as pa
import pytest
from pydantic import ValidationError

from factory import records
from factory.io.images import ImageLimits, NormalisedImage, decode_rgb
from factory.stage_kit.contract import MissingColumnsError
from factory.stages import validate
from factory.stages.validate import ValidateConfig, ValidateStage
from tests import imagegen

INPUT_SCHEMA = records.LISTING_SCHEMA.append(pa.field("data", pa.binary()))
TIMING_COLUMN = records.TIMING_PREFIX + "validate"


def listing(items: list[tuple[str, bytes | None]], **overrides_by_uri: dict) -> pa.Table:
    """A batch as the reader hands it on: listing columns plus the raw bytes."""
    rows = []
    for index, (uri, data) in enumerate(items):
        row = {name: None for name in INPUT_SCHEMA.names}
        row |= {"uri": uri, "input_index": index, "status": records.OK, "data": data}
        row |= overrides_by_uri.get(uri, {})
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=INPUT_SCHEMA)


def run(table: pa.Table, **config: object) -> pa.Table:
    return ValidateStage(ValidateConfig(**config))(table)


def by_uri(table: pa.Table) -> dict[str, dict]:
    return {row["uri"]: row for row in table.to_pylist()}


def test_accepted_row_gets_every_declared_column_with_its_type() -> None:
    data = imagegen.jpeg(1600, 1200, seed=3)
    out = run(listing([("file:///a.jpg", data)]))
    for name, dtype in ValidateStage.COLUMNS.adds.items():
        assert out.schema.field(name).type == dtype, name
    assert "data" not in out.column_names
    assert out.schema.field(TIMING_COLUMN).type == pa.float64()
    (row,) = out.to_pylist()
    digest = hashlib.sha256(data).hexdigest()
    assert row["status"] == records.OK
    assert (row["image_id"], row["content_sha256"]) == (digest[:20], digest)
    assert (row["width"], row["height"], row["image_format"]) == (1024, 768, "jpeg")
    assert decode_rgb(row["image"]).size == (1024, 768)
    assert (row["source_width"], row["source_height"]) == (1600, 1200)
    assert (row["source_format"], row["source_mode"], row["frames"]) == ("JPEG", "RGB", 1)
    assert row["source_bytes"] == len(data)
    assert row[TIMING_COLUMN] >= 0


def test_each_bad_row_is_rejected_with_its_reason_and_good_rows_survive() -> None:
    bad = {
        "empty": (b"", "empty_file"),
        "html": (imagegen.HTML_ERROR_PAGE, "not_an_image"),
        "truncated": (imagegen.truncated_jpeg(), "corrupt"),
        "tiny": (imagegen.tiny_jpeg(), "too_small"),
        "banner": (imagegen.extreme_aspect_png(), "extreme_aspect"),
        "bomb": (imagegen.bomb_png(), "too_many_pixels"),
    }
    items = [("good-1", imagegen.png(seed=1))]
    items += [(uri, data) for uri, (data, _) in bad.items()] + [("good-2", imagegen.webp())]
    out = run(listing(items))
    assert out.column("uri").to_pylist() == [uri for uri, _ in items], "order is kept"
    rows = by_uri(out)
    for uri, (_, reason) in bad.items():
        assert (rows[uri]["status"], rows[uri]["reason"]) == (records.REJECTED, reason), uri
        assert rows[uri]["reject_stage"] == "validate"
        assert rows[uri]["detail"]
        assert rows[uri]["image"] is None
    assert rows["good-1"]["status"] == rows["good-2"]["status"] == records.OK


def test_rows_rejected_or_duplicated_upstream_pass_through_untouched() -> None:
    earlier = {
        "unread": {
            "status": records.REJECTED,
            "reject_stage": "read",
            "reason": "unreadable",
            "detail": "permission denied",
            "data": None,
        },
        "copy": {"status": records.DUPLICATE, "duplicate_of": "orig", "duplicate_kind": "exact"},
    }
    table = listing(
        [("unread", None), ("copy", imagegen.jpeg()), ("orig", imagegen.jpeg())], **earlier
    )
    out = run(table)
    for name in records.LISTING_SCHEMA.names:
        assert out.column(name).to_pylist()[:2] == table.column(name).to_pylist()[:2], name
    for name in ValidateStage.COLUMNS.adds:
        assert out.column(name).to_pylist()[:2] == [None, None], name
    assert out.column("status").to_pylist()[2] == records.OK


def test_unexpected_exception_becomes_a_rejected_row(monkeypatch) -> None:
    poison = imagegen.jpeg(seed=9)
    real = validate.normalise_image

    def normalise_or_crash(data: bytes, limits: ImageLimits) -> NormalisedImage:
        if data == poison:
            raise RuntimeError("decoder exploded")
        return real(data, limits)

    monkeypatch.setattr(validate, "normalise_image", normalise_or_crash)
    rows = by_uri(run(listing([("poison", poison), ("fine", imagegen.jpeg(seed=1))])))
    assert (rows["poison"]["status"], rows["poison"]["reason"]) == (records.REJECTED, "error")
    assert "RuntimeError: decoder exploded" in rows["poison"]["detail"]
    assert rows["fine"]["status"] == records.OK


def test_ok_row_without_bytes_is_rejected_not_raised() -> None:
    (row,) = run(listing([("nothing", None)])).to_pylist()
    assert (row["status"], row["reason"]) == (records.REJECTED, "error")
    assert "no data" in row["detail"]


def test_missing_data_column_fails_loudly() -> None:
    table = listing([("a", imagegen.jpeg())]).drop_columns(["data"])
    with pytest.raises(MissingColumnsError, match="data"):
        run(table)


def test_config_defaults_match_image_limits_and_overrides_reach_the_stage() -> None:
    assert ValidateConfig().limits() == ImageLimits()
    batch = listing([("a", imagegen.jpeg(400, 300))])
    (row,) = run(batch, max_side=64, output_format="png").to_pylist()
    assert (row["width"], row["height"], row["image_format"]) == (64, 48, "png")
    assert row["image"].startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "bad_config", [{"output_format": "gif"}, {"max_side": 0}, {"jpeg_quality": 100}, {"x": 1}]
)
def test_invalid_config_is_refused(bad_config: dict) -> None:
    with pytest.raises(ValidationError):
        ValidateConfig(**bad_config)


def test_mixed_folder_rejections_match_the_generator_expectations(tmp_path: pathlib.Path) -> None:
    expected = imagegen.write_mixed_folder(tmp_path)
    # Arrow strings must be valid UTF-8, so the non-UTF-8 name travels percent-encoded.
    uris = {name: (tmp_path / name).as_uri() for name in expected}
    items = [(uris[name], (tmp_path / name).read_bytes()) for name in sorted(expected)]
    rows = by_uri(run(listing(items)))
    for name, outcome in expected.items():
        got = rows[uris[name]]
        if outcome.startswith("rejected:"):
            assert f"rejected:{got['reason']}" == outcome, name
        else:  # accepted and duplicates both pass validation; dedup decides the rest
            assert got["status"] == records.OK, (name, got["detail"])
