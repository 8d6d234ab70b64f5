"""Request images, however they arrive, checked by the validation stage's rules.

Base64 (plain or a `data:image/...;base64,` URL), multipart uploads and http(s) URLs all
end in `normalise_image`: the same byte and pixel limits (pixels read from the header
before any decoding), the same restricted decoders and strict truncation handling, the
same RGB conversion as a batch run. A rejection becomes a 413 or 422 with the stage's
reason as the error code and its detail as the message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re

from factory.io.images import (
    FILE_TOO_LARGE,
    TOO_MANY_PIXELS,
    ImageLimits,
    normalise_image,
)
from factory.records import RejectRecord
from factory.serve.api_errors import ApiError
from factory.serve.serve_config import RequestLimits
from factory.serve.url_fetch import ImageFetcher

_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<b64>;base64)?,", re.IGNORECASE)
_TOO_LARGE = (FILE_TOO_LARGE, TOO_MANY_PIXELS)


def image_limits(limits: RequestLimits, max_side: int) -> ImageLimits:
    """The validation stage's limits for request images; re-encoded at the engine's size."""
    return ImageLimits(
        max_bytes=limits.max_image_bytes,
        max_pixels=limits.max_image_pixels,
        min_side=limits.min_image_side,
        max_aspect_ratio=limits.max_aspect_ratio,
        max_side=max_side,
    )


class ImageInput:
    """Turns what a client sent into checked, normalised image bytes for the engine."""

    def __init__(self, limits: ImageLimits, fetcher: ImageFetcher):
        self.limits, self.fetcher = limits, fetcher

    async def from_base64(self, text: str, param: str = "image") -> bytes:
        match = _DATA_URL.match(text)
        if match:
            return await self.from_data_url(text, param)
        return await self.checked(self._decoded(text, param))

    async def from_url(self, url: str, param: str = "image_url") -> bytes:
        """A data URL or an http(s) URL (fetched under the SSRF guard)."""
        if url[:5].lower() == "data:":
            return await self.from_data_url(url, param)
        return await self.checked(await self.fetcher.fetch(url))

    async def from_data_url(self, url: str, param: str) -> bytes:
        match = _DATA_URL.match(url)
        if not match or not match["b64"]:
            raise ApiError(
                400, "invalid_data_url", "data URLs must be data:image/<type>;base64,...", param
            )
        if match["type"] and not match["type"].lower().startswith("image/"):
            raise ApiError(
                422, "not_an_image", f"the data URL holds {match['type']}, not an image", param
            )
        return await self.checked(self._decoded(url[match.end() :], param))

    async def checked(self, data: bytes) -> bytes:
        # decoding can take a while for a big scan: off the event loop
        return await asyncio.to_thread(self._normalised, data)

    def _normalised(self, data: bytes) -> bytes:
        try:
            return normalise_image(data, self.limits).data
        except RejectRecord as rejected:
            reason, detail = rejected.rejection.reason, rejected.rejection.detail
            status = 413 if reason in _TOO_LARGE else 422
            raise ApiError(status, reason, f"image refused: {detail}", "image") from None

    def _decoded(self, text: str, param: str) -> bytes:
        # base64 is 4 characters per 3 bytes: refuse an oversized image before decoding it
        if len(text) * 3 // 4 > self.limits.max_bytes + 3:
            raise ApiError(
                413,
                FILE_TOO_LARGE,
                f"image refused: more than {self.limits.max_bytes:,} bytes once decoded",
                param,
            )
        try:
            return base64.b64decode("".join(text.split()), validate=True)
        except (binascii.Error, ValueError) as error:
            raise ApiError(
                400, "invalid_base64", f"{param} is not valid base64: {error}", param
            ) from None
