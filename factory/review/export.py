"""`review export`: the N captions the critic scored lowest, as a folder a person can work
through.

    REVIEW/review.jsonl (or review.csv)   one item per caption (see factory.review.items)
    REVIEW/images/0001-<name>-<id>.jpg    each source image, numbered in review order
    REVIEW/README.txt                     what the reviewer does, and how to import
    REVIEW/prompts.jsonl                  each item's exact prompt (for the DPO pairs)

Only rows the critic scored (non-null `critic_score` and a non-empty `draft_caption`) are
eligible. The review file is written last, so a folder without one is an interrupted
export, never a half-written review.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from factory import records
from factory.io import uris
from factory.io.outputs import shard_paths
from factory.review import DEFAULT_COUNT
from factory.review.draft_prompt import (
    PROMPT_COLUMNS,
    PROMPTS_FILE,
    draft_prompt,
    encode_prompts,
    read_settings,
)
from factory.review.items import REVIEW_FILES, FactCheck, HealthFlag, ReviewFormat, ReviewItem
from factory.review.items import encode as encode_items
from factory.review.review_errors import FolderNotEmpty, NothingToReview, ReviewError

SCORED = ("uri", "critic_score", "draft_caption")  # without these the critic did not run
# what an item is built from; the captions rows also hold image bytes and embeddings,
# which a review never needs, so only these are read
ITEM_COLUMNS = (
    *SCORED,
    "draft_style",
    "draft_caption_lineage",
    "fact_checks",
    "final_caption",
    "health_flags",
    "run_id",
)
IMAGES = "images"
README = "README.txt"
# what an export writes, and all that overwrite=True removes from the folder
EXPORT_ENTRIES = (IMAGES, README, PROMPTS_FILE, *REVIEW_FILES.values())
COPY_THREADS = 8  # image copies are I/O-bound; S3 latency dominates


@dataclass(frozen=True)
class ExportSummary:
    folder: str
    review_file: str
    items: int
    eligible: int  # captions the critic scored (before max_score)
    captions: int  # rows in the run's captions/
    lowest: float
    highest: float  # of the exported items
    missing_images: tuple[str, ...]  # source URIs that no longer exist; their image is null

    def line(self) -> str:
        missing = ""
        if self.missing_images:
            missing = f"; {len(self.missing_images)} source images missing (image is null)"
        return (
            f"review export: {self.items} of {self.eligible} scored captions "
            f"({self.captions} in the run), critic scores {self.lowest:.2f}-{self.highest:.2f}, "
            f"-> {self.review_file}{missing}"
        )


def export_review(
    run: str,
    to: str,
    n: int = DEFAULT_COUNT,
    format: ReviewFormat = "jsonl",
    max_score: float | None = None,
    overwrite: bool = False,
) -> ExportSummary:
    """Export the `n` lowest-scored captions of `run` (ties by uri) into the folder `to`.

    `max_score` keeps only captions scored at or below it. Refuses a non-empty `to`
    unless `overwrite`, which then replaces only what an export writes there.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if format not in REVIEW_FILES:
        raise ValueError(f"format must be one of {sorted(REVIEW_FILES)}, got {format!r}")
    earlier_export = _check_folder(to, overwrite)
    dataset = _captions_dataset(run)
    selected, eligible = _lowest(dataset, run, n, max_score)
    rows = _rows(dataset, selected)
    if earlier_export:  # only now: a failed selection must not cost the old review
        _remove_export(to)
    items = [_item(rows[uri]) for uri in selected]
    settings = read_settings(run)
    prompts = {item.id: draft_prompt(rows[item.uri], settings) for item in items}
    missing = _copy_images(items, to)
    review_file = uris.join(to, REVIEW_FILES[format])
    uris.write_bytes_atomically(uris.join(to, README), _readme(run, format, items).encode())
    known = {item_id: prompt for item_id, prompt in prompts.items() if prompt is not None}
    uris.write_bytes_atomically(uris.join(to, PROMPTS_FILE), encode_prompts(known))
    uris.write_bytes_atomically(review_file, encode_items(items, format))
    return ExportSummary(
        folder=to,
        review_file=review_file,
        items=len(items),
        eligible=eligible,
        captions=dataset.count_rows(),
        lowest=items[0].critic_score,
        highest=items[-1].critic_score,
        missing_images=tuple(missing),
    )


def item_id(uri: str, draft_caption: str) -> str:
    """The same draft of the same image gets the same id in every export."""
    digest = hashlib.sha256(f"{uri}\n{draft_caption}".encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


def _check_folder(to: str, overwrite: bool) -> bool:
    """Whether `to` holds anything; refuses that unless `overwrite`."""
    filesystem, root = uris.filesystem(to)
    info = filesystem.get_file_info(root)
    if info.type == pafs.FileType.File:
        raise ReviewError(f"{to} is a file; name a folder for the review")
    selector = pafs.FileSelector(root, allow_not_found=True)
    present = sorted(entry.base_name for entry in filesystem.get_file_info(selector))
    if present and not overwrite:
        raise FolderNotEmpty(
            f"{to} is not empty (holds {', '.join(present[:5])}"
            f"{', ...' if len(present) > 5 else ''}); a reviewer's edits there would be lost. "
            "Export into a new folder, or pass overwrite=True (--overwrite) to replace it"
        )
    return bool(present)


def _remove_export(to: str) -> None:
    """What an earlier export wrote; anything else someone put in the folder stays."""
    filesystem, root = uris.filesystem(to)
    for name in EXPORT_ENTRIES:
        path = f"{root.rstrip('/')}/{name}"
        kind = filesystem.get_file_info(path).type
        if kind == pafs.FileType.Directory:
            filesystem.delete_dir(path)
        elif kind == pafs.FileType.File:
            filesystem.delete_file(path)


def _captions_dataset(run: str) -> ds.Dataset:
    """The run's caption shards as one dataset, tolerant of shards from differing configs.

    Shards are the committed ones `read_output` also reads; read_output itself reads whole
    tables, and these rows carry image bytes and embeddings that a review never needs.
    """
    folder = uris.join(run, records.OUTPUT_DIRS[records.OK])
    filesystem, shards = shard_paths(run, records.OUTPUT_DIRS[records.OK])
    if not shards:
        raise NothingToReview(f"no caption shards in {folder}: is {run} a caption run's --output?")
    schema = pa.unify_schemas([pq.read_schema(path, filesystem=filesystem) for path in shards])
    absent = [name for name in SCORED if name not in schema.names]
    if absent:
        raise NothingToReview(
            f"the captions in {run} have no {', '.join(absent)} column: the critic did not run, "
            "so there is nothing to review"
        )
    return ds.dataset(shards, schema=schema, filesystem=filesystem, format="parquet")


def _lowest(
    dataset: ds.Dataset, run: str, n: int, max_score: float | None
) -> tuple[list[str], int]:
    """URIs of the n lowest-scored eligible captions, and how many were eligible."""
    scored = (pc.field("critic_score").is_valid()) & (pc.field("draft_caption") != "")
    table = dataset.to_table(columns=["uri", "critic_score"], filter=scored)
    if table.num_rows == 0:
        raise NothingToReview(
            f"none of the {dataset.count_rows()} captions in {run} has a critic score "
            "and a draft caption: the critic did not run on them, so there is nothing to review"
        )
    eligible = table.num_rows
    if max_score is not None:
        lowest = pc.min(table.column("critic_score")).as_py()
        table = table.filter(pc.less_equal(table.column("critic_score"), max_score))
        if table.num_rows == 0:
            raise NothingToReview(
                f"no caption in {run} scored at or below {max_score} (the lowest of "
                f"{eligible} scored captions is {lowest:.3f})"
            )
    # uri breaks ties, so equal scores export in the same order every time
    table = table.sort_by([("critic_score", "ascending"), ("uri", "ascending")])
    return table.slice(0, n).column("uri").to_pylist(), eligible


def _rows(dataset: ds.Dataset, selected: list[str]) -> dict[str, dict]:
    # the draft's prompt needs the experts' columns and the first-pass caption of its style
    captions = [n for n in dataset.schema.names if n.startswith("caption_") and "lineage" not in n]
    wanted_columns = (*ITEM_COLUMNS, *PROMPT_COLUMNS, *captions)
    columns = [name for name in wanted_columns if name in dataset.schema.names]
    wanted = pc.field("uri").isin(pa.array(selected, pa.string()))
    return {row["uri"]: row for row in dataset.to_table(columns, filter=wanted).to_pylist()}


def _item(row: dict) -> ReviewItem:
    lineage = row.get("draft_caption_lineage") or {}
    return ReviewItem(
        id=item_id(row["uri"], row["draft_caption"]),
        image=None,  # set once the image is copied
        critic_score=row["critic_score"],
        fact_checks=[FactCheck(**check) for check in row.get("fact_checks") or []],
        draft_caption=row["draft_caption"],
        final_caption=row.get("final_caption"),
        corrected_caption="",
        health_flags=[HealthFlag(**flag) for flag in row.get("health_flags") or []],
        style=row.get("draft_style"),
        prompt_template=lineage.get("prompt_template"),
        uri=row["uri"],
        run_id=row.get("run_id"),
    )


def _copy_images(items: list[ReviewItem], to: str) -> list[str]:
    """Copy each source image into to/images/, setting item.image; returns missing URIs."""
    width = max(3, len(str(len(items))))

    def copy(rank: int, item: ReviewItem) -> None:
        if uris.size_of(item.uri) is None:
            return
        data = uris.read_bytes(item.uri)
        name = image_name(rank, width, item.id, item.uri, data)
        uris.write_bytes_atomically(uris.join(to, IMAGES, name), data)
        item.image = f"{IMAGES}/{name}"

    with ThreadPoolExecutor(COPY_THREADS) as pool:
        list(pool.map(copy, range(1, len(items) + 1), items))
    return [item.uri for item in items if item.image is None]


def image_name(rank: int, width: int, item_id: str, uri: str, data: bytes) -> str:
    """`0007-great-wave-3fa2b1c4.png`: review order, a readable stem, unique by id."""
    base = posixpath.basename(unquote(uri)) if "://" in uri else os.path.basename(uri)
    stem, extension = os.path.splitext(base)
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_stem.lower()).strip("-")[:40] or "image"
    extension = extension.lower()
    if not re.fullmatch(r"\.[a-z0-9]{1,5}", extension):
        extension = _sniffed_extension(data)
    return f"{rank:0{width}d}-{slug}-{item_id[:8]}{extension}"


def _sniffed_extension(data: bytes) -> str:
    """An extension from the bytes, for sources named without one (e.g. S3 keys)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            kind = (image.format or "").lower()
    except (UnidentifiedImageError, OSError, ValueError):
        return ".bin"
    if not kind:
        return ".bin"
    return {"jpeg": ".jpg", "mpo": ".jpg", "jpeg2000": ".jp2"}.get(kind, f".{kind}")


def _readme(run: str, format: ReviewFormat, items: list[ReviewItem]) -> str:
    review_file = REVIEW_FILES[format]
    where = (
        "Open review.csv in a spreadsheet and save it as CSV (UTF-8)."
        if format == "csv"
        else "Open review.jsonl in a text editor: each line is one caption, as JSON."
    )
    return f"""\
Caption review: {len(items)} captions from {run}
whose facts the automatic critic trusted least (critic_score = share of facts judged
consistent with the image; lowest first).

{where}
For each item:
  1. Look at its picture: the `image` column, a file in images/.
  2. Read `fact_checks` (the critic's verdict on each fact) and `draft_caption`.
     `final_caption` is the machine's own rewrite: use it as a starting point if it helps.
  3. Write the caption as it should read into `corrected_caption`: only what is visible,
     no guessed names, dates or places.
     Leave it empty to skip the item; a correction identical to the draft is skipped too.
Change no other field: import pairs your caption with the draft by them.

When done:
  factory review import --review <this folder> --out <pairs.parquet>
writes preference pairs (chosen = your caption, rejected = the draft) for DPO training.
Exporting into this folder again refuses unless --overwrite, which discards edits in
{review_file}.
"""
