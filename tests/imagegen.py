"""Deterministic test inputs: every kind of image (good and bad) the factory meets, as bytes.

Everything here is small and built in milliseconds. Fixtures with known colours (solid
halves or thirds) let tests check conversions pixel by pixel; `make_image` gives
distinct, detailed pictures for dedup and end-to-end runs.
"""

from __future__ import annotations

import io
import os
import pathlib
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw

RED = (255, 0, 0)
GREEN = (0, 255, 0)
BLUE = (0, 0, 255)
CYAN = (0, 255, 255)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)

ACCEPTED = "accepted"
DUPLICATE_EXACT = "duplicate:exact"
DUPLICATE_NEAR = "duplicate:near"

EXIF_ORIENTATION = 0x0112
GREY16_THIRDS = (30000, 32896, 60000)  # 32896 = 128 * 257, 16-bit mid-grey

HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head>\n"
    b"<body><h1>Service Unavailable</h1><p>The museum image server is busy.</p></body>"
    b"</html>\n"
)


def make_image(width: int, height: int, seed: int) -> Image.Image:
    """An RGB picture of large random shapes on a random gradient; seeds look unrelated."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(_gradient(width, height, rng))
    draw = ImageDraw.Draw(image)
    for _ in range(7):
        _draw_random_shape(draw, width, height, rng)
    return image


def _gradient(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    start, end = rng.integers(0, 256, size=(2, 3))
    angle = rng.uniform(0, 2 * np.pi)
    ys, xs = np.mgrid[0:height, 0:width]
    along = xs / max(1, width - 1) * np.cos(angle) + ys / max(1, height - 1) * np.sin(angle)
    along = (along - along.min()) / max(1e-9, np.ptp(along))
    blend = start + along[..., None] * (end - start)
    return blend.astype(np.uint8)


def _draw_random_shape(
    draw: ImageDraw.ImageDraw, width: int, height: int, rng: np.random.Generator
) -> None:
    colour = tuple(int(value) for value in rng.integers(0, 256, size=3))
    x0, y0 = rng.uniform(-0.2, 0.8) * width, rng.uniform(-0.2, 0.8) * height
    x1 = x0 + rng.uniform(0.2, 0.6) * width
    y1 = y0 + rng.uniform(0.2, 0.6) * height
    kind = int(rng.integers(0, 3))
    if kind == 0:
        draw.rectangle((x0, y0, x1, y1), fill=colour)
    elif kind == 1:
        draw.ellipse((x0, y0, x1, y1), fill=colour)
    else:
        draw.polygon([(x0, y1), ((x0 + x1) / 2, y0), (x1, y1)], fill=colour)


def encode(image: Image.Image, pil_format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, pil_format, **options)
    return buffer.getvalue()


def jpeg(width: int = 160, height: int = 120, seed: int = 0, quality: int = 90) -> bytes:
    return encode(make_image(width, height, seed), "JPEG", quality=quality)


def png(width: int = 160, height: int = 120, seed: int = 0) -> bytes:
    return encode(make_image(width, height, seed), "PNG")


def webp(width: int = 160, height: int = 120, seed: int = 0) -> bytes:
    return encode(make_image(width, height, seed), "WEBP", quality=90)


def halves(mode: str, size: tuple[int, int], left: object, right: object) -> Image.Image:
    """An image whose left and right halves are solid colours (in any PIL mode)."""
    image = Image.new(mode, size, left)
    image.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return image


def exif_rotated_jpeg() -> bytes:
    """Stored 96x64, top half red, bottom half blue, EXIF orientation 6.

    Orientation 6 means "rotate 90 degrees clockwise to display": displayed upright it is
    64x96 with the stored top (red) on the right and blue on the left.
    """
    stored = Image.new("RGB", (96, 64), BLUE)
    stored.paste(RED, (0, 0, 96, 32))
    return _with_orientation_6(stored)


def _with_orientation_6(image: Image.Image) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    return encode(image, "JPEG", quality=95, exif=exif)


def cmyk_jpeg() -> bytes:
    """64x64 CMYK: left half red (0 C, full M and Y), right half cyan."""
    return encode(halves("CMYK", (64, 64), (0, 255, 255, 0), (255, 0, 0, 0)), "JPEG", quality=95)


def grey16_png() -> bytes:
    """96x64 16-bit grey ("I;16"), thirds at 30000, 32896 (mid-grey) and 60000."""
    values = np.empty((64, 96), dtype=np.uint16)
    for third, value in enumerate(GREY16_THIRDS):
        values[:, third * 32 : (third + 1) * 32] = value
    return encode(Image.fromarray(values), "PNG")


def rgb16_png() -> bytes:
    """64x64 16-bit-per-channel RGB filled with (65535, 32768, 0).

    PIL cannot write 16-bit RGB, so the PNG is assembled by hand.
    """
    row = b"\x00" + struct.pack(">HHH", 65535, 32768, 0) * 64
    return _png_from_chunks(64, 64, bit_depth=16, colour_type=2, idat=zlib.compress(row * 64))


def float_tiff() -> bytes:
    """96x64 32-bit float grey ("F") TIFF, thirds at 0.0, 0.5 and 1.0."""
    values = np.repeat(np.array([0.0, 0.5, 1.0], dtype=np.float32), 32)
    return encode(Image.fromarray(np.tile(values, (64, 1))), "TIFF")


def bilevel_png() -> bytes:
    """64x64 1-bit ("1"): left half black, right half white."""
    return encode(halves("1", (64, 64), 0, 1), "PNG")


def palette_png_with_transparency() -> bytes:
    """64x64 palette image: left half index 0 (black, fully transparent), right half red."""
    image = halves("P", (64, 64), 0, 1)
    image.putpalette([*BLACK, *RED])
    return encode(image, "PNG", transparency=0)


def rgba_png() -> bytes:
    """96x64 RGBA thirds: transparent black, half-transparent red, opaque green."""
    image = Image.new("RGBA", (96, 64), (0, 0, 0, 0))
    image.paste((255, 0, 0, 128), (32, 0, 64, 64))
    image.paste((*GREEN, 255), (64, 0, 96, 64))
    return encode(image, "PNG")


def la_png() -> bytes:
    """64x64 grey + alpha: left half transparent black, right half opaque black."""
    return encode(halves("LA", (64, 64), (0, 0), (0, 255)), "PNG")


def animated(pil_format: str = "GIF") -> bytes:
    """Three 64x64 frames, red then green then blue, as GIF, PNG (APNG) or WEBP."""
    frames = [Image.new("RGB", (64, 64), colour) for colour in (RED, GREEN, BLUE)]
    return encode(frames[0], pil_format, save_all=True, append_images=frames[1:], duration=100)


def truncated_jpeg(seed: int = 0) -> bytes:
    """A 256x192 JPEG cut halfway through its scan data (headers intact)."""
    data = jpeg(256, 192, seed)
    scan_start = data.index(b"\xff\xda")
    return data[: (scan_start + len(data)) // 2]


def corrupt_png(seed: int = 0) -> bytes:
    """A PNG whose compressed pixel data has been overwritten in the middle."""
    data = bytearray(png(128, 96, seed))
    middle = data.index(b"IDAT") + 200
    data[middle : middle + 64] = bytes(64)
    return bytes(data)


def broken_header_png() -> bytes:
    """The PNG signature followed by zeros: claims to be a PNG, has no readable header."""
    return b"\x89PNG\r\n\x1a\n" + bytes(120)


def garbage(size: int = 4096, seed: int = 0) -> bytes:
    """Random bytes, never starting with an image signature (the first byte is 0x00)."""
    return b"\x00" + np.random.default_rng(seed).bytes(size - 1)


def tiny_jpeg() -> bytes:
    return jpeg(20, 15, seed=11)


def extreme_aspect_png() -> bytes:
    """2000x40: an aspect ratio of 50:1."""
    return png(2000, 40, seed=12)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG header claiming width x height grey pixels over a few bytes of data.

    Decoding it would allocate width x height bytes; a checker must refuse it from the
    header alone.
    """
    idat = zlib.compress(bytes(width + 1))  # one row; the rest are never reached
    return _png_from_chunks(width, height, bit_depth=8, colour_type=0, idat=idat)


def _png_from_chunks(
    width: int, height: int, *, bit_depth: int, colour_type: int, idat: bytes
) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    chunks = [_png_chunk(b"IHDR", header), _png_chunk(b"IDAT", idat), _png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    checksum = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", checksum)


def _valid_files() -> dict[bytes, bytes]:
    """Distinct pictures (one seed each) in every encoding the factory must accept."""
    grey = np.asarray(make_image(200, 150, 6).convert("L"), dtype=np.uint16) * 257
    cutout = make_image(200, 150, 7).convert("RGBA")
    cutout.paste((0, 0, 0, 0), (0, 0, 40, 150))
    return {
        b"harbour.jpg": jpeg(240, 180, seed=1),
        b"nested/deeper/still life.png": png(200, 150, seed=2),
        b"nested/portrait.webp": webp(150, 200, seed=3),
        b"caf\xe9.jpg": jpeg(200, 200, seed=4),
        b"scans/print_cmyk.jpg": encode(make_image(200, 150, 5).convert("CMYK"), "JPEG"),
        b"scans/plate_16bit.png": encode(Image.fromarray(grey), "PNG"),
        b"scans/cutout.png": encode(cutout, "PNG"),
        b"rotated.jpg": _with_orientation_6(make_image(200, 150, 8)),
    }


def _bad_files() -> dict[bytes, tuple[bytes, str]]:
    return {
        b"bad/empty.jpg": (b"", "empty_file"),
        b"bad/error_page.jpg": (HTML_ERROR_PAGE, "not_an_image"),
        b"bad/garbage.png": (garbage(), "not_an_image"),
        b"bad/truncated.jpg": (truncated_jpeg(), "corrupt"),
        b"bad/broken_header.png": (broken_header_png(), "corrupt"),
        b"bad/tiny.jpg": (tiny_jpeg(), "too_small"),
        b"bad/banner.png": (extreme_aspect_png(), "extreme_aspect"),
        b"bad/bomb.png": (bomb_png(), "too_many_pixels"),
    }


def write_mixed_folder(root: pathlib.Path) -> dict[str, str]:
    """Write a folder of good, bad and duplicate images; return path -> expected outcome.

    Keys are paths relative to `root` with "/" separators, decoded by `os.fsdecode` (so
    the non-UTF-8 name b"caf\\xe9.jpg" appears as "caf\\udce9.jpg"). Outcomes are
    "accepted", "duplicate:exact", "duplicate:near" or "rejected:<reason>" under the
    default limits. Copies live under zz_copies/ so they sort after their original.
    """
    valid = _valid_files()
    copies = {
        b"zz_copies/harbour copy.jpg": (valid[b"harbour.jpg"], DUPLICATE_EXACT),
        b"zz_copies/harbour_resaved.jpg": (_near_copy_of_harbour(), DUPLICATE_NEAR),
    }
    files = {name: (data, ACCEPTED) for name, data in valid.items()}
    files |= copies
    files |= {name: (data, f"rejected:{reason}") for name, (data, reason) in _bad_files().items()}
    root_bytes = os.fsencode(root)
    expected = {}
    for name, (data, outcome) in files.items():
        path = os.path.join(root_bytes, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(data)
        expected[os.fsdecode(name)] = outcome
    return expected


def _near_copy_of_harbour() -> bytes:
    """The harbour picture slightly smaller and re-encoded at a lower quality."""
    resized = make_image(240, 180, seed=1).resize((216, 162), Image.Resampling.LANCZOS)
    return encode(resized, "JPEG", quality=60)
