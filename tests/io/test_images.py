"""normalise_image: every bad kind gets its reason code, every conversion correct pixels."""

from __future__ import annotations

import dataclasses
import io
import time
import warnings

import pytest
from PIL import Image, ImageCms, ImageFile

from factory.io.images import ImageLimits, NormalisedImage, decode_rgb, normalise_image
from factory.records import RejectRecord
from tests import imagegen

LIMITS = ImageLimits()


def normalised(data: bytes, **overrides: object) -> NormalisedImage:
    return normalise_image(data, dataclasses.replace(LIMITS, **overrides))


def rejection(data: bytes, **overrides: object) -> tuple[str, str]:
    with pytest.raises(RejectRecord) as raised:
        normalised(data, **overrides)
    return raised.value.rejection.reason, raised.value.rejection.detail


def colour_at(result: NormalisedImage, x_fraction: float) -> tuple[int, int, int]:
    """The pixel at a fraction of the width, on the middle row."""
    image = decode_rgb(result.data)
    return image.getpixel((int(x_fraction * (image.width - 1)), image.height // 2))


def assert_close(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 8) -> None:
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), (
        f"{actual} is not within {tolerance} of {expected}"
    )


BAD_INPUTS = {
    "empty": (b"", "empty_file"),
    "html_error_page": (imagegen.HTML_ERROR_PAGE, "not_an_image"),
    "garbage": (imagegen.garbage(), "not_an_image"),
    "truncated_jpeg": (imagegen.truncated_jpeg(), "corrupt"),
    "corrupt_png": (imagegen.corrupt_png(), "corrupt"),
    "broken_png_header": (imagegen.broken_header_png(), "corrupt"),
    "tiny": (imagegen.tiny_jpeg(), "too_small"),
    "extreme_aspect": (imagegen.extreme_aspect_png(), "extreme_aspect"),
    "bomb": (imagegen.bomb_png(), "too_many_pixels"),
    "bomb_under_pil_limit": (imagegen.bomb_png(9000, 9000), "too_many_pixels"),
}


@pytest.mark.parametrize("data, reason", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_gets_its_reason_code(data: bytes, reason: str) -> None:
    assert rejection(data)[0] == reason


def test_details_say_the_numbers() -> None:
    assert rejection(imagegen.tiny_jpeg())[1] == "image is 20x15 px; the minimum side is 32 px"
    aspect_detail = rejection(imagegen.extreme_aspect_png())[1]
    assert "2000x40" in aspect_detail and "50.0:1" in aspect_detail and "20:1" in aspect_detail
    assert "81,000,000 px" in rejection(imagegen.bomb_png(9000, 9000))[1]
    assert "10,000,000,000 px" in rejection(imagegen.bomb_png())[1]


def test_file_over_max_bytes_is_too_large_and_at_max_bytes_is_fine() -> None:
    data = imagegen.jpeg()
    reason, detail = rejection(data, max_bytes=len(data) - 1)
    assert reason == "file_too_large"
    assert f"{len(data):,} bytes" in detail
    assert normalised(data, max_bytes=len(data)).width == 160


def test_not_an_image_detail_says_what_it_looks_like() -> None:
    html_detail = rejection(imagegen.HTML_ERROR_PAGE)[1]
    assert "HTML page" in html_detail and "starts with '<!DOCTYPE html>" in html_detail
    assert "starts with bytes 00 " in rejection(imagegen.garbage())[1]


def test_truncated_jpeg_is_corrupt_when_decoded_at_reduced_scale() -> None:
    assert rejection(imagegen.truncated_jpeg(), max_side=32)[0] == "corrupt"


def test_truncated_jpeg_is_corrupt_even_if_pil_was_made_lenient(monkeypatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    assert rejection(imagegen.truncated_jpeg())[0] == "corrupt"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True, "the caller's setting is restored"


@pytest.mark.parametrize("size", [(100_000, 100_000), (9000, 9000)], ids=["huge", "moderate"])
def test_bomb_is_refused_from_its_header_without_decoding(monkeypatch, size) -> None:
    decodes = []
    original_load = ImageFile.ImageFile.load

    def spy_load(image: ImageFile.ImageFile) -> object:
        decodes.append(image.size)
        return original_load(image)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy_load)
    started = time.perf_counter()
    assert rejection(imagegen.bomb_png(*size))[0] == "too_many_pixels"
    assert time.perf_counter() - started < 1.0
    assert decodes == []


@pytest.mark.parametrize(
    "pil_max_pixels, max_pixels",
    [(9_000, LIMITS.max_pixels), (10_000, 20_000)],
    ids=["pil-would-refuse", "pil-would-warn"],
)
def test_pil_bomb_check_never_refuses_what_our_limit_allows(
    monkeypatch, pil_max_pixels: int, max_pixels: int
) -> None:
    # 160x120 = 19,200 px: over PIL's lowered warning (or error, at twice it) threshold.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", pil_max_pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's bomb warning must not escape either
        result = normalised(imagegen.jpeg(160, 120), max_pixels=max_pixels)
    assert (result.width, result.height) == (160, 120)


def test_exif_rotation_is_applied() -> None:
    result = normalised(imagegen.exif_rotated_jpeg())
    assert (result.source_width, result.source_height) == (96, 64)
    assert (result.width, result.height) == (64, 96)
    assert_close(colour_at(result, 0.1), imagegen.BLUE)
    assert_close(colour_at(result, 0.9), imagegen.RED)


def test_output_carries_no_orientation_or_source_profile() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for data in (
        imagegen.exif_rotated_jpeg(),
        imagegen.encode(imagegen.make_image(64, 64, 1), "PNG", icc_profile=icc),
    ):
        with Image.open(io.BytesIO(normalised(data, output_format="png").data)) as output:
            assert output.getexif().get(imagegen.EXIF_ORIENTATION) is None
            assert output.info.get("icc_profile") is None


def test_cmyk_becomes_the_right_rgb() -> None:
    result = normalised(imagegen.cmyk_jpeg())
    assert result.source_mode == "CMYK"
    assert_close(colour_at(result, 0.1), imagegen.RED)
    assert_close(colour_at(result, 0.9), imagegen.CYAN)


def test_16_bit_grey_is_scaled_not_clipped_to_white() -> None:
    result = normalised(imagegen.grey16_png())
    assert result.source_mode == "I;16"
    for x_fraction, value in zip((0.15, 0.5, 0.85), imagegen.GREY16_THIRDS, strict=True):
        assert_close(colour_at(result, x_fraction), (round(value / 257),) * 3, tolerance=2)


def test_16_bit_rgb_keeps_its_colour() -> None:
    assert_close(colour_at(normalised(imagegen.rgb16_png()), 0.5), (255, 128, 0), tolerance=2)


def test_float_grey_in_unit_range_spans_black_to_white() -> None:
    result = normalised(imagegen.float_tiff())
    assert result.source_mode == "F"
    for x_fraction, expected in ((0.15, 0), (0.5, 128), (0.85, 255)):
        assert_close(colour_at(result, x_fraction), (expected,) * 3, tolerance=2)


def test_bilevel_becomes_black_and_white() -> None:
    result = normalised(imagegen.bilevel_png())
    assert result.source_mode == "1"
    assert_close(colour_at(result, 0.1), imagegen.BLACK)
    assert_close(colour_at(result, 0.9), imagegen.WHITE)


def test_transparent_palette_pixels_become_white() -> None:
    result = normalised(imagegen.palette_png_with_transparency())
    assert result.source_mode == "P"
    assert_close(colour_at(result, 0.1), imagegen.WHITE)
    assert_close(colour_at(result, 0.9), imagegen.RED)


def test_rgba_is_composited_on_white() -> None:
    result = normalised(imagegen.rgba_png())
    assert_close(colour_at(result, 0.15), imagegen.WHITE)
    assert_close(colour_at(result, 0.5), (255, 127, 127))
    assert_close(colour_at(result, 0.85), imagegen.GREEN)


def test_grey_with_alpha_is_composited_on_white() -> None:
    result = normalised(imagegen.la_png())
    assert result.source_mode == "LA"
    assert_close(colour_at(result, 0.1), imagegen.WHITE)
    assert_close(colour_at(result, 0.9), imagegen.BLACK)


@pytest.mark.parametrize("pil_format", ["GIF", "PNG", "WEBP"])
def test_animation_uses_its_first_frame_and_counts_frames(pil_format: str) -> None:
    result = normalised(imagegen.animated(pil_format))
    assert result.frames == 3
    assert result.source_format == pil_format
    assert_close(colour_at(result, 0.5), imagegen.RED)


def test_embedded_srgb_profile_keeps_colours() -> None:
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = imagegen.halves("RGB", (64, 64), (200, 30, 60), (20, 90, 220))
    result = normalised(imagegen.encode(source, "PNG", icc_profile=icc))
    assert_close(colour_at(result, 0.1), (200, 30, 60), tolerance=4)
    assert_close(colour_at(result, 0.9), (20, 90, 220), tolerance=4)


def test_broken_embedded_profile_falls_back_to_plain_conversion() -> None:
    source = imagegen.halves("RGB", (64, 64), imagegen.RED, imagegen.BLUE)
    result = normalised(imagegen.encode(source, "JPEG", icc_profile=b"not a profile" * 20))
    assert_close(colour_at(result, 0.1), imagegen.RED)


@pytest.mark.parametrize(
    "size, max_side, expected",
    [
        ((2000, 500), 1024, (1024, 256)),
        ((500, 2000), 100, (25, 100)),
        ((160, 120), 1024, (160, 120)),  # never upscaled
        ((2400, 1800), 300, (300, 225)),  # JPEG decoded at reduced scale first
    ],
)
def test_long_side_shrinks_to_max_side_keeping_aspect(size, max_side, expected) -> None:
    result = normalised(imagegen.jpeg(*size), max_side=max_side)
    assert (result.width, result.height) == expected
    assert (result.source_width, result.source_height) == size
    assert decode_rgb(result.data).size == expected


@pytest.mark.parametrize(
    "output_format, pil_format", [("jpeg", "JPEG"), ("png", "PNG"), ("webp", "WEBP")]
)
def test_output_is_encoded_in_the_chosen_format(output_format: str, pil_format: str) -> None:
    result = normalised(imagegen.png(), output_format=output_format)
    assert result.format == output_format
    with Image.open(io.BytesIO(result.data)) as output:
        assert (output.format, output.mode) == (pil_format, "RGB")


def test_source_facts_are_reported() -> None:
    result = normalised(imagegen.webp(150, 200))
    assert (result.source_format, result.source_mode) == ("WEBP", "RGB")
    assert (result.source_width, result.source_height, result.frames) == (150, 200, 1)


@pytest.mark.parametrize(
    "bad_field",
    [
        {"output_format": "gif"},
        {"max_aspect_ratio": 0.5},
        {"jpeg_quality": 0},
        {"max_side": 0},
        {"min_side": 0},
    ],
)
def test_impossible_limits_are_refused(bad_field: dict) -> None:
    with pytest.raises(ValueError):
        ImageLimits(**bad_field)
