"""Deterministic museum-label images for OCR tests (a helper, not a test module).

Each label is three to five printed lines (maker, title, medium and date, accession
number) drawn in one of matplotlib's bundled fonts at one of several sizes, turned by up to
3 degrees and laid on a textured card: a paper tint with a gradient, fibre-like grain and
sensor noise. Some cards are dark with light lettering, as gallery wall panels often are.
Same index, same image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

LABELS: tuple[tuple[str, ...], ...] = (
    (
        "Katsushika Hokusai",
        "The Great Wave off Kanagawa",
        "Woodblock print, c. 1830-32",
        "Accession 1936.21.4",
        "Gallery 231: Japanese Art",
    ),
    (
        "Pieter Bruegel the Elder",
        "The Harvesters, 1565",
        "Oil on wood, 119 x 162 cm",
        "Rogers Fund, 1919 (19.164)",
    ),
    (
        "Johannes Vermeer (1632-1675)",
        "Young Woman with a Water Pitcher",
        "Oil on canvas",
        "Gift of Henry G. Marquand, 1889",
    ),
    (
        "Attic red-figure amphora",
        "Greek, about 490 BC",
        "Terracotta; H. 41.6 cm",
        "Inv. no. GR 1843.11-3.23",
    ),
    (
        "Utagawa Hiroshige",
        "Horse-mackerel and Prawn",
        "From the series Uo-zukushi",
        "Edo period, ca. 1840",
    ),
    (
        "Leiden Aratea, fol. 3v-4r",
        "Carolingian, c. 816-840",
        "Ink and pigments on vellum",
        "MS VLQ 79",
    ),
    (
        "Portrait of a Merchant",
        "Attributed to Hans Holbein",
        "Oil on oak panel, 1532",
        "Loan: Private Collection",
    ),
    (
        "Tetradrachm of Athens",
        "Silver, 449-413 BC",
        "Weight: 17.2 g; Diam. 24 mm",
        "Coin Cabinet No. 5081",
    ),
    (
        "Vincent van Gogh",
        "The Starry Night (June 1889)",
        "Oil on canvas, 73.7 x 92.1 cm",
        "Acquired 1941, No. 472",
    ),
    ("Seated Buddha", "Gandhara, 2nd-3rd century", "Grey schist; Purchase, 1978 (78.12)"),
    (
        "The Hunt of the Unicorn",
        "South Netherlandish, 1495-1505",
        "Wool, silk, silver and gilt",
        "Gallery 17, Room B",
    ),
    ("Mask of a Dancer", "Dan peoples, Liberia", "Wood, pigment, fibre", "Ref. AF-2021/0093"),
    ("Claude Monet", "Water Lilies, 1916-19", "Oil on canvas", "Bequest of Mrs. A. Hall, 1952"),
    ("Astrolabe", "Made in Isfahan, AD 1712", "Brass, engraved", "Object 44/118, Science Wing"),
    (
        "Portrait Miniature",
        "Watercolour on ivory, 6 x 5 cm",
        "England, circa 1790",
        "Case 3, item 12",
    ),
    (
        "Celadon Vase",
        "Korea, Goryeo dynasty",
        "12th century; stoneware",
        "Donated by the Kim family",
    ),
    (
        "Rembrandt van Rijn",
        "Self-Portrait with Two Circles",
        "Oil on canvas, c. 1665-69",
        "Iveagh Bequest, Kenwood",
    ),
    (
        "Bronze Figure of Shiva",
        "Tamil Nadu, Chola period",
        "c. 1000; H. 68 cm",
        "Accession 2009.45.1a-b",
    ),
    (
        "Map of the World",
        "Abraham Ortelius, Antwerp 1570",
        "Hand-coloured engraving",
        "Drawer 8 / Sheet 21",
    ),
    ("Pair of Gloves", "English, 1610-20", "Leather, silk, metal thread", "Museum no. T.63-1938"),
    (
        "Still Life with Lemons",
        "Willem Claesz. Heda, 1634",
        "Oil on panel, 52 x 73 cm",
        "Room 12: Dutch Painting",
    ),
    (
        "Funerary Stele of Aline",
        "Hawara, Egypt, AD 24",
        "Painted limestone",
        "Roman period, reign of Tiberius",
        "Egyptian Museum, No. 11/87",
    ),
    (
        "Harpsichord",
        "Andreas Ruckers, Antwerp, 1640",
        "Wood, paint, paper",
        "Musical Instruments 89.4.2363",
    ),
    ("The Lady and the Unicorn", "Paris, c. 1500", "Wool and silk", "Cluny Museum, CL 10834"),
)

FONT_FILES = (
    "DejaVuSans.ttf",
    "DejaVuSerif.ttf",
    "STIXGeneral.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSerif-Italic.ttf",
    "STIXGeneralBol.ttf",
)
FONT_SIZES = (24, 28, 32, 36, 40)
MAX_ANGLE = 3.0
MARGIN = 70
LINE_SPACING = 1.5  # baseline-to-baseline distance in font sizes
DARK_EVERY = 6  # every sixth card is a dark wall panel with light lettering


@dataclass(frozen=True)
class LabelStyle:
    font_file: str
    size: int
    angle: float
    dark: bool
    seed: int


def font_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf"


def label_style(index: int, seed: int = 0) -> LabelStyle:
    rng = np.random.default_rng([seed, index])
    return LabelStyle(
        font_file=FONT_FILES[index % len(FONT_FILES)],
        size=FONT_SIZES[(index * 3) % len(FONT_SIZES)],
        angle=float(rng.uniform(-MAX_ANGLE, MAX_ANGLE)),
        dark=index % DARK_EVERY == DARK_EVERY - 1,
        seed=int(rng.integers(0, 2**31)),
    )


def label_images(count: int = 20, seed: int = 0) -> list[tuple[np.ndarray, str]]:
    """`count` labels as (RGB uint8 image, expected text with one line per printed line)."""
    if count > len(LABELS):
        raise ValueError(f"at most {len(LABELS)} distinct labels; asked for {count}")
    return [label_image(index, seed) for index in range(count)]


def label_image(index: int, seed: int = 0) -> tuple[np.ndarray, str]:
    lines = LABELS[index]
    style = label_style(index, seed)
    return render_label(lines, style), "\n".join(lines)


def render_label(lines: tuple[str, ...], style: LabelStyle) -> np.ndarray:
    rng = np.random.default_rng(style.seed)
    font = ImageFont.truetype(str(font_dir() / style.font_file), style.size)
    mask = _text_mask(lines, font, style.size)
    mask = mask.rotate(style.angle, Image.Resampling.BICUBIC, expand=True)
    width, height = mask.width + 2 * MARGIN, mask.height + 2 * MARGIN
    card = _card(width, height, style.dark, rng)
    ink = _ink(style.dark, rng)
    alpha = np.asarray(mask, dtype=np.float64)[..., None] / 255.0
    placed = np.zeros((height, width, 1))
    placed[MARGIN : MARGIN + mask.height, MARGIN : MARGIN + mask.width] = alpha
    blended = card * (1.0 - placed) + ink * placed
    noisy = blended + rng.normal(0.0, 5.0, blended.shape)  # sensor noise over ink and paper
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def _text_mask(lines: tuple[str, ...], font: ImageFont.FreeTypeFont, size: int) -> Image.Image:
    """White-on-black coverage of the lines, left-aligned like a wall label."""
    pitch = round(size * LINE_SPACING)
    width = max(round(font.getlength(line)) for line in lines) + size
    mask = Image.new("L", (width, pitch * len(lines) + size), 0)
    draw = ImageDraw.Draw(mask)
    for number, line in enumerate(lines):
        draw.text((size // 2, size // 2 + number * pitch), line, fill=255, font=font)
    return mask


def _card(width: int, height: int, dark: bool, rng: np.random.Generator) -> np.ndarray:
    """Paper (or painted panel) with a lighting gradient and fibre-like grain."""
    base = rng.uniform(35, 70, 3) if dark else rng.uniform(215, 250, 3) - [0, 4, 14]
    ramp = np.linspace(-1.0, 1.0, width)[None, :, None] * rng.uniform(-18, 18)
    ramp = ramp + np.linspace(-1.0, 1.0, height)[:, None, None] * rng.uniform(-12, 12)
    return base + ramp + _grain(width, height, rng)[..., None]


def _grain(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """Streaky low-contrast texture: noise blurred more along one axis, like paper fibres."""
    fibres = Image.fromarray(np.uint8(rng.integers(0, 256, (height, width))))
    fibres = fibres.resize((max(1, width // 6), height), Image.Resampling.BILINEAR)
    fibres = fibres.resize((width, height), Image.Resampling.BICUBIC)
    fibres = fibres.filter(ImageFilter.GaussianBlur(1.2))
    values = np.asarray(fibres, dtype=np.float64)
    return (values - values.mean()) * 0.15


def _ink(dark: bool, rng: np.random.Generator) -> np.ndarray:
    if dark:
        return rng.uniform(215, 245, 3)
    inks = ((25, 22, 20), (40, 28, 18), (18, 26, 60), (50, 50, 52))
    return np.array(inks[int(rng.integers(0, len(inks)))], dtype=np.float64)
