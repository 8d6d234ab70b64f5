"""The report's examples: thumbnails as data URIs and the gallery section's HTML.

Images come from the run's own normalised `image` column (read only for the chosen rows,
shard by shard) or, for `factory eval --images`, from files named after the image ids.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image

from factory.eval import html
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
    """uri -> thumbnail for the wanted accepted rows of a run, from its `image` column.

    Images are read only from the shards that hold a wanted row (found from the `uri`
    column alone), so the cost follows the gallery's size, not the run's.
    """
    value_set = _array(set(wanted))
    found: dict[str, str] = {}
    for shard, filesystem in _shards_holding(output, value_set):
        if "image" not in pq.read_schema(shard, filesystem=filesystem).names:
            continue  # an output written without images: the gallery shows text only
        table = pq.read_table(shard, filesystem=filesystem, columns=["uri", "image"])
        table = table.filter(pc.is_in(table.column("uri"), value_set=value_set))
        for row in table.to_pylist():
            if row["image"] and (uri_thumb := thumbnail(row["image"], side)):
                found[row["uri"]] = uri_thumb
    return found


def _shards_holding(output: str, value_set: pa.Array) -> list[tuple[str, pafs.FileSystem]]:
    filesystem, shards = outputs.shard_paths(output, "captions")
    holding, left = [], len(value_set)
    for shard in shards:
        if left <= 0:
            break
        listed = pq.read_table(shard, filesystem=filesystem, columns=["uri"]).column("uri")
        hits = pc.sum(pc.is_in(listed, value_set=value_set)).as_py() or 0
        if hits:
            holding.append((shard, filesystem))
            left -= hits
    return holding


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


def run_gallery(examples: list[dict], columns: list[str], images: dict[str, str]) -> str:
    """The report's gallery section: each example's image, texts, facts, flags, QA, OCR."""
    items = [_example(row, columns, images.get(row["uri"])) for row in examples]
    intro = f"<p>{len(examples)} examples, lowest critic score first.</p>"
    return html.section("gallery", "Gallery", intro, *items)


def _example(row: dict, columns: list[str], thumbnail: str | None) -> str:
    picture = html.image(thumbnail, row["uri"]) if thumbnail else "<p>(no image)</p>"
    parts = [
        f"<p><b>{html.esc(row['uri'])}</b> · category {html.esc(row.get('category') or '-')}"
        f" · critic score {html.number(row.get('critic_score'))}</p>"
    ]
    for column in columns:
        if row.get(column):
            parts.append(
                f'<h4>{html.esc(column)}</h4><p class="caption">{html.esc(row[column])}</p>'
            )
    checks = row.get("fact_checks") or []
    if checks:
        facts = "".join(
            f'<li class="{html.esc(c.get("verdict") or "unparsed")}">'
            f"{html.esc(c.get('fact'))} — <b>{html.esc(c.get('verdict') or 'unparsed')}</b>"
            f"{': ' + html.esc(c.get('reason')) if c.get('reason') else ''}</li>"
            for c in checks
        )
        parts.append(f"<h4>facts</h4><ul>{facts}</ul>")
    flags = row.get("health_flags") or []
    if flags:
        spans = "".join(
            f'<span class="flag">{html.esc(f["rule"])} ({html.esc(f["field"])})</span>'
            for f in flags
        )
        parts.append(f"<h4>health flags</h4><p>{spans}</p>")
    if row.get("qa"):
        pairs = "".join(
            f"<li>[{html.esc(p.get('category'))}] {html.esc(p.get('question'))} → "
            f"{html.esc(p.get('answer'))}</li>"
            for p in row["qa"]
        )
        parts.append(f"<h4>questions</h4><ul>{pairs}</ul>")
    if row.get("ocr_text"):
        parts.append(f'<h4>OCR</h4><p class="caption">{html.esc(row["ocr_text"])}</p>')
    if row.get("tags"):
        tags = ", ".join(f"{t['label']} {t['score']:.2f}" for t in row["tags"])
        parts.append(f"<h4>tags</h4><p>{html.esc(tags)}</p>")
    return f'<div class="example">{picture}<div class="text">{"".join(parts)}</div></div>'


def _array(values: set[str]) -> pa.Array:
    return pa.array(sorted(values), pa.string())
