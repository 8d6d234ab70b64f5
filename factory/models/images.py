"""Request images as every engine sees them: decoded, RGB, downscaled to max_image_side.

Pure PIL, no torch: the HTTP engine encodes images too and must stay light.
"""

from __future__ import annotations

import base64
import io

from PIL import Image

from factory.io.images import fit_within, to_rgb


def decode_image(data: bytes, max_side: int) -> Image.Image:
    """Encoded bytes -> correct RGB that fits in max_side x max_side, aspect ratio kept."""
    image = Image.open(io.BytesIO(data))
    # For JPEG, decode at a reduced scale straight away: big museum scans decode much faster.
    image.draft("RGB", (max_side, max_side))
    return fit_within(to_rgb(image), max_side)


def jpeg_data_url(data: bytes, max_side: int, quality: int = 90) -> str:
    """The image as the transformers and vllm engines see it, as a base64 JPEG data URL.

    Re-encoding after the resize keeps the upload small and the pixels the same as the
    local engines' (up to JPEG loss), whatever format the museum sent.
    """
    buffer = io.BytesIO()
    decode_image(data, max_side).save(buffer, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
