"""Example images for the report: which rows to show, and their thumbnails as data URIs.

Images come from the run's own normalised `image` column (read only for the chosen rows,
shard by shard) or, for `factory eval --images`, from files named after the image ids.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable

import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image

from factory.io import outputs, uris

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


def thumbnail(data: bytes, side: int) -> str | None:
    """A JPEG data URI of at most `side` pixels; None when the bytes are not an image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            image.thumbnail((side, side))
            buffer = io.BytesIO()
            image.save(buffer, format="JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def run_thumbnails(output: str, wanted: Iterable[str], side: int) -> dict[str, str]:
    """uri -> thumbnail for the wanted accepted rows of a run, from its `image` column."""
    wanted = set(wanted)
    found: dict[str, str] = {}
    filesystem, shards = outputs.shard_paths(output, "captions")
    for shard in shards:
        if len(found) == len(wanted):
            break
        if "image" not in pq.read_schema(shard, filesystem=filesystem).names:
            continue  # an output written without images: the gallery shows text only
        table = pq.read_table(shard, filesystem=filesystem, columns=["uri", "image"])
        table = table.filter(pc.is_in(table.column("uri"), value_set=_array(wanted)))
        for row in table.to_pylist():
            if row["image"] and (uri_thumb := thumbnail(row["image"], side)):
                found[row["uri"]] = uri_thumb
    return found


def folder_images(root: str, ids: Iterable[str]) -> dict[str, bytes]:
    """image id -> bytes of `<root>/<image id>.<image suffix>` (local folder or s3://)."""
    filesystem, path = uris.filesystem(root)
    selector = pafs.FileSelector(path, recursive=False, allow_not_found=True)
    by_stem: dict[str, str] = {}
    for info in filesystem.get_file_info(selector):
        stem, dot, suffix = info.base_name.rpartition(".")
        if info.type == pafs.FileType.File and dot and f".{suffix.lower()}" in IMAGE_SUFFIXES:
            by_stem[stem] = uris.join(root, info.base_name)
    return {key: uris.read_bytes(by_stem[key]) for key in ids if key in by_stem}


def _array(values: set[str]):
    import pyarrow as pa

    return pa.array(sorted(values), pa.string())
