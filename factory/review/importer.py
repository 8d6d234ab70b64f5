"""`review import`: a reviewed folder's corrections as preference pairs for DPO training.

One Parquet file, one row per corrected caption (schema `PAIRS_SCHEMA`): the prompt the
draft answered, `chosen` = the reviewer's caption, `rejected` = the draft. The prompt is
the one the export recorded in prompts.jsonl: exactly what the draft's model saw, expert
notes, catalogue record and expansion questions included. Only an item with no recorded
prompt (an older export) falls back to its template rendered without the per-image parts.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from factory.io import uris
from factory.prompts import load_prompt
from factory.review.draft_prompt import read_prompts
from factory.review.items import ReadItem, find_review_file, read_review
from factory.review.review_errors import MalformedReview, ReviewError

PAIRS_SCHEMA = pa.schema(
    [
        pa.field("uri", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("prompt_template", pa.string(), nullable=False),
        pa.field("style", pa.string()),
        pa.field("chosen", pa.string(), nullable=False),
        pa.field("rejected", pa.string(), nullable=False),
        pa.field("critic_score", pa.float64()),
        pa.field("run_id", pa.string()),
        pa.field("review_id", pa.string(), nullable=False),
    ]
)

# why an item gave no pair
NO_CORRECTION = "no_correction"  # corrected_caption left empty
UNCHANGED = "unchanged"  # corrected_caption equals the draft: no preference to learn


@dataclass(frozen=True)
class ImportSummary:
    review_file: str
    out: str
    items: int
    pairs: int
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> items

    def line(self) -> str:
        skipped = ", ".join(f"{count} {reason}" for reason, count in sorted(self.skipped.items()))
        return (
            f"review import: {self.pairs} preference pairs from {self.items} items of "
            f"{self.review_file} -> {self.out}; skipped: {skipped or 'none'}"
        )


def import_review(review: str, out: str) -> ImportSummary:
    """Read the review file in folder `review` and write its pairs to the Parquet file `out`."""
    review_file = find_review_file(review)
    _check_destination(out)
    read = read_review(review_file)
    pairs: list[dict] = []
    skipped: Counter[str] = Counter()
    prompts: dict[str, str] = {}
    exact = read_prompts(review_file)
    for entry in read:
        reason = _skip_reason(entry)
        if reason:
            skipped[reason] += 1
            continue
        pairs.append(_pair(review_file, entry, prompts, exact.get(entry.item.id)))
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(pairs, schema=PAIRS_SCHEMA), buffer, compression="zstd")
    uris.write_bytes_atomically(out, buffer.getvalue())
    return ImportSummary(review_file, out, len(read), len(pairs), dict(skipped))


def normalised(text: str) -> str:
    return " ".join(text.split())


def _skip_reason(entry: ReadItem) -> str | None:
    corrected = normalised(entry.item.corrected_caption or "")
    if not corrected:
        return NO_CORRECTION
    if corrected == normalised(entry.item.draft_caption):
        return UNCHANGED
    return None


def _pair(review_file: str, entry: ReadItem, prompts: dict[str, str], exact: str | None) -> dict:
    item = entry.item
    if not item.prompt_template:
        raise MalformedReview(
            f"{review_file}, line {entry.line}: item {item.id} has no prompt_template, so its "
            "pair would have no prompt"
        )
    # the template is checked even when the export recorded the prompt: a pair names it
    if item.prompt_template not in prompts:
        try:
            prompts[item.prompt_template] = load_prompt(item.prompt_template).render()
        except ValueError as error:
            raise MalformedReview(f"{review_file}, line {entry.line}: {error}") from None
    return {
        "uri": item.uri,
        "prompt": exact or prompts[item.prompt_template],
        "prompt_template": item.prompt_template,
        "style": item.style,
        "chosen": (item.corrected_caption or "").strip(),
        "rejected": item.draft_caption,
        "critic_score": item.critic_score,
        "run_id": item.run_id,
        "review_id": item.id,
    }


def _check_destination(out: str) -> None:
    """`out` names the Parquet file itself; a folder there is a mistake worth stopping."""
    filesystem, path = uris.filesystem(out)
    if filesystem.get_file_info(path).type == pafs.FileType.Directory:
        raise ReviewError(f"{out} is a folder; name the Parquet file, e.g. {out}/pairs.parquet")
