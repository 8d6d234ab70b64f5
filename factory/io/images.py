"""Check and normalise one image's bytes: pure PIL and numpy, no Ray.

`normalise_image` turns whatever a museum hands us (CMYK JPEGs, 16-bit scans, palette
PNGs with transparency, animated GIFs, EXIF-rotated phone photos) into an sRGB RGB
image no larger than `ImageLimits.max_side`, re-encoded in one output format. Anything
unusable raises `RejectRecord` with one of the reason codes below and a detail that says
the numbers, so a curator can tell why an image was turned away.
"""

from __future__ import annotations

import functools
import io
import re
import struct
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, TypeVar

import numpy as np
from PIL import Image, ImageCms, ImageFile, ImageOps, UnidentifiedImageError

from factory.records import RejectRecord

OutputFormat = Literal["jpeg", "png", "webp"]
T = TypeVar("T")

EMPTY_FILE = "empty_file"
FILE_TOO_LARGE = "file_too_large"
NOT_AN_IMAGE = "not_an_image"
CORRUPT = "corrupt"
TOO_MANY_PIXELS = "too_many_pixels"
TOO_SMALL = "too_small"
EXTREME_ASPECT = "extreme_aspect"
REASONS = (
    EMPTY_FILE,
    FILE_TOO_LARGE,
    NOT_AN_IMAGE,
    CORRUPT,
    TOO_MANY_PIXELS,
    TOO_SMALL,
    EXTREME_ASPECT,
)

# Formats we decode. Restricting PIL keeps exotic parsers (EPS runs Ghostscript, TGA has
# no magic bytes and "recognises" random garbage) away from untrusted input. Multi-picture
# JPEGs (MPO) open through "JPEG"; naming "MPO" here makes PIL raise KeyError.
READABLE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP", "JPEG2000", "AVIF")
PIL_OUTPUT_FORMATS: dict[str, str] = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}
WEBP_MAX_SIDE = 16383  # the smallest side limit of the three output encoders

# Errors PIL raises on bad data while parsing or decoding.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error)
_WIDE_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_WHITE = (255, 255, 255, 255)

_IMAGE_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xffO\xffQ", "JPEG 2000"),
)
_LOOKALIKES = (
    (b"<!doctype html", "an HTML page"),
    (b"<html", "an HTML page"),
    (b"<svg", "an SVG drawing"),
    (b"<?xml", "an XML document"),
    (b"%pdf", "a PDF document"),
    (b"pk\x03\x04", "a ZIP archive"),
    (b"\x1f\x8b", "gzip data"),
    (b"8bps", "a Photoshop document"),
    (b"{", "JSON"),
)


@dataclass(frozen=True)
class ImageLimits:
    """What an acceptable image is, and what shape it leaves in."""

    max_bytes: int = 64 * 1024 * 1024
    """Largest encoded file accepted, in bytes."""
    max_pixels: int = 64_000_000
    """Largest width x height accepted; read from the header before any pixel is decoded."""
    min_side: int = 32
    """Smallest width or height accepted, in pixels."""
    max_aspect_ratio: float = 20.0
    """Largest long side / short side accepted (long scrolls and strips beyond it)."""
    max_side: int = 1024
    """Long side of the re-encoded image; larger images shrink to it, smaller never grow."""
    output_format: OutputFormat = "jpeg"
    """Encoding of the normalised image: jpeg, png or webp."""
    jpeg_quality: int = 90
    """Quality of jpeg output (also used for lossy webp), 1-95."""

    def __post_init__(self) -> None:
        if self.output_format not in PIL_OUTPUT_FORMATS:
            raise ValueError(f"output_format must be one of {sorted(PIL_OUTPUT_FORMATS)}")
        if min(self.max_bytes, self.max_pixels, self.min_side) < 1:
            raise ValueError("max_bytes, max_pixels and min_side must be at least 1")
        if self.max_aspect_ratio < 1:
            raise ValueError("max_aspect_ratio is long side / short side, so at least 1")
        if not 1 <= self.max_side <= WEBP_MAX_SIDE:
            raise ValueError(f"max_side must be between 1 and {WEBP_MAX_SIDE}")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError("jpeg_quality must be between 1 and 95")


@dataclass(frozen=True)
class NormalisedImage:
    """A re-encoded RGB image and what its source looked like."""

    data: bytes
    format: OutputFormat
    width: int
    height: int
    source_format: str
    """PIL's name for the input format, e.g. "JPEG", "PNG"."""
    source_mode: str
    """PIL's mode of the input, e.g. "CMYK", "I;16", "P", "RGBA"."""
    source_width: int
    """Width as stored in the file, before EXIF orientation."""
    source_height: int
    frames: int
    """Frames in the source; animated images are normalised from the first."""


def normalise_image(data: bytes, limits: ImageLimits) -> NormalisedImage:
    """Check `data` against `limits` and re-encode it as RGB; raises `RejectRecord`."""
    _check_byte_size(data, limits)
    with _strict_pil(limits.max_pixels):
        image = _open(data)
        _check_geometry(image.size, limits)
        frames = _decoded(lambda: getattr(image, "n_frames", 1))
        source_mode, source_size = image.mode, image.size
        _decode_small_enough(image, limits.max_side)
    ImageOps.exif_transpose(image, in_place=True)  # a copy otherwise, even when upright
    rgb = fit_within(to_rgb(image), limits.max_side)
    return NormalisedImage(
        data=_encode(rgb, limits),
        format=limits.output_format,
        width=rgb.width,
        height=rgb.height,
        source_format=image.format or "unknown",
        source_mode=source_mode,
        source_width=source_size[0],
        source_height=source_size[1],
        frames=frames,
    )


def decode_rgb(data: bytes) -> Image.Image:
    """Decode bytes that `normalise_image` produced back into an RGB image."""
    with Image.open(io.BytesIO(data)) as image:
        return image.convert("RGB")


def _check_byte_size(data: bytes, limits: ImageLimits) -> None:
    if not data:
        raise RejectRecord(EMPTY_FILE, "the file is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise RejectRecord(
            FILE_TOO_LARGE, f"file is {len(data):,} bytes; the limit is {limits.max_bytes:,} bytes"
        )


@contextmanager
def _strict_pil(max_pixels: int) -> Iterator[None]:
    """Make PIL decode strictly and leave the pixel limit to us.

    PIL has no per-call switches for these, so this sets its module flags: truncated
    data must fail (not load as grey), and PIL's own bomb check must never refuse an
    image our limit allows. Its bomb error, raised for far larger images, means the same
    as ours.
    """
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > 2 * Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = -(-max_pixels // 2)  # PIL refuses above twice this
    lenient = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except Image.DecompressionBombError as error:
        raise _bomb_rejection(error, max_pixels) from error
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient


def _bomb_rejection(error: Image.DecompressionBombError, max_pixels: int) -> RejectRecord:
    found = re.search(r"\((\d+) pixels\)", str(error))
    claimed = f"{int(found.group(1)):,} px" if found else "more pixels than PIL allows"
    return RejectRecord(
        TOO_MANY_PIXELS, f"image header claims {claimed}; the limit is {max_pixels:,} px"
    )


def _open(data: bytes) -> ImageFile.ImageFile:
    """Parse the header only; pixels stay undecoded."""
    try:
        return Image.open(io.BytesIO(data), formats=READABLE_FORMATS)
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except _DECODE_ERRORS as error:
        raise RejectRecord(CORRUPT, f"the image header cannot be read: {error}") from error


def _unidentified(data: bytes) -> RejectRecord:
    signature = next((name for magic, name in _IMAGE_SIGNATURES if data.startswith(magic)), None)
    if signature:
        return RejectRecord(CORRUPT, f"starts like a {signature} file but its header is broken")
    return RejectRecord(NOT_AN_IMAGE, f"not a supported image format; {describe_start(data)}")


def describe_start(data: bytes) -> str:
    """Say what non-image bytes look like, e.g. "looks like an HTML page; starts with ..."."""
    head = data[:32]
    if all(byte in b"\t\r\n" or 32 <= byte < 127 for byte in head):
        shown = f"starts with {head.decode('ascii')!r}"
    else:
        shown = f"starts with bytes {head[:16].hex(' ')}"
    sniffed = data[:64].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    lookalike = next((kind for prefix, kind in _LOOKALIKES if sniffed.startswith(prefix)), None)
    return f"looks like {lookalike}; {shown}" if lookalike else shown


def _check_geometry(size: tuple[int, int], limits: ImageLimits) -> None:
    width, height = size
    pixels = width * height
    if pixels > limits.max_pixels:
        raise RejectRecord(
            TOO_MANY_PIXELS,
            f"image is {width}x{height} px ({pixels:,} px); the limit is {limits.max_pixels:,} px",
        )
    if min(width, height) < limits.min_side:
        raise RejectRecord(
            TOO_SMALL, f"image is {width}x{height} px; the minimum side is {limits.min_side} px"
        )
    aspect = max(width, height) / max(1, min(width, height))
    if aspect > limits.max_aspect_ratio:
        raise RejectRecord(
            EXTREME_ASPECT,
            f"image is {width}x{height} px, an aspect ratio of {aspect:.1f}:1; "
            f"the maximum is {limits.max_aspect_ratio:g}:1",
        )


def _decoded(read: Callable[[], T]) -> T:
    """Run a PIL call that touches pixel data, turning bad data into a rejection."""
    try:
        return read()
    except _DECODE_ERRORS as error:
        raise RejectRecord(CORRUPT, f"pixel data cannot be decoded: {error}") from error


def _decode_small_enough(image: ImageFile.ImageFile, max_side: int) -> None:
    """Decode every pixel of the first frame, letting JPEG scale down while it decodes.

    JPEG's DCT scaling (draft) still reads all the scan data, so truncation is still
    caught, but a 40-megapixel scan decodes at an eighth of the cost.
    """
    width, height = image.size
    scale = max_side / max(width, height)
    if scale < 1:
        image.draft(None, (int(width * scale) + 1, int(height * scale) + 1))
    _decoded(image.load)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any decoded PIL image as correct RGB (wide greys scaled, alpha on white, sRGB)."""
    icc_profile = image.info.get("icc_profile")
    if image.mode in _WIDE_GREY_MODES:
        return _grey_to_8_bit(image).convert("RGB")
    if _has_transparency(image):
        image = _flattened_on_white(image)
    if icc_profile and image.mode in ("RGB", "CMYK"):
        return _to_srgb(image, icc_profile)
    return image if image.mode == "RGB" else image.convert("RGB")  # convert copies RGB too


def _grey_to_8_bit(image: Image.Image) -> Image.Image:
    """Scale wide grey values by their type's range; PIL's own convert just clips at 255."""
    values = np.nan_to_num(np.asarray(image).astype(np.float64))
    low, high = _value_range(image.mode, values)
    scaled = (values - low) * (255.0 / (high - low))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _value_range(mode: str, values: np.ndarray) -> tuple[float, float]:
    low, high = float(values.min()), float(values.max())
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and high <= 65535):
        return 0.0, 65535.0  # "I" is how some decoders hand over 16-bit samples
    if mode == "F" and low >= 0 and high <= 1:
        return 0.0, 1.0
    # Values of unknown meaning (32-bit ints, HDR floats): stretch what is there.
    return low, max(high, low + 1.0)


def _has_transparency(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info


def _flattened_on_white(image: Image.Image) -> Image.Image:
    """Composite onto white: transparent museum cut-outs are shown on white, not black."""
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, _WHITE), rgba).convert("RGB")


def _to_srgb(image: Image.Image, icc_profile: bytes) -> Image.Image:
    try:
        return _transform_to_srgb(icc_profile, image.mode).apply(image)
    except (ImageCms.PyCMSError, OSError, ValueError):
        # A broken or mismatched embedded profile: the pixels are still worth keeping.
        return image.convert("RGB")


@functools.lru_cache(maxsize=16)
def _transform_to_srgb(icc_profile: bytes, mode: str) -> ImageCms.ImageCmsTransform:
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    return ImageCms.buildTransform(source, srgb, mode, "RGB")


def fit_within(image: Image.Image, max_side: int) -> Image.Image:
    """Shrink (never enlarge) so the long side is at most `max_side`, aspect kept."""
    long_side = max(image.size)
    if long_side <= max_side:
        return image
    scale = max_side / long_side
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _encode(image: Image.Image, limits: ImageLimits) -> bytes:
    # Drop carried-over metadata: the source's ICC profile and EXIF orientation would
    # both be wrong for pixels that are already sRGB and upright.
    image.info.clear()
    options = {"quality": limits.jpeg_quality} if limits.output_format != "png" else {}
    buffer = io.BytesIO()
    image.save(buffer, PIL_OUTPUT_FORMATS[limits.output_format], **options)
    return buffer.getvalue()
