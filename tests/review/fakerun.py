"""A caption run's output as the critic stages will write it, built without running them.

Each source image is a tiny solid-colour PNG, so a copied image can be checked by its
pixel. Rows follow the captions/ contract: draft + lineage, fact checks, critic score,
final caption, health flags, plus the bulky columns (image bytes, embedding) a review
must not need.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from factory import records
from factory.io import uris

TEMPLATE = "caption_detailed.v1"  # a template the package ships
FACT_TYPE = pa.struct(
    [
        pa.field("fact", pa.string()),
        pa.field("verdict", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("correction", pa.string()),
    ]
)
FLAG_TYPE = pa.struct(
    [pa.field("field", pa.string()), pa.field("rule", pa.string()), pa.field("detail", pa.string())]
)


@dataclass(frozen=True)
class Source:
    name: str  # file name under the local folder or S3 prefix
    colour: tuple[int, int, int]
    score: float | None  # None: the critic did not run on this row
    s3: bool = False


SOURCES = (
    Source("harvesters.png", (200, 10, 10), 0.5),
    Source("Grande Vague à Kanagawa.png", (10, 200, 10), 0.25),
    Source("starry.png", (10, 10, 200), 0.5),  # ties with harvesters and s3 coins
    Source("unscored.png", (90, 90, 90), None),
    Source("perfect.png", (250, 250, 0), 1.0),
    Source("zero.png", (0, 250, 250), 0.0),
    Source("coins.png", (120, 60, 0), 0.5, s3=True),
    Source("aratea-no-extension", (60, 0, 120), 0.125, s3=True),
)


@dataclass(frozen=True)
class FakeRun:
    output: str
    uri_of: dict[str, str]  # source name -> uri
    colour_of: dict[str, tuple[int, int, int]]  # uri -> colour
    score_of: dict[str, float | None]  # uri -> critic score

    def lowest(self, n: int) -> list[str]:
        """The n lowest-scored uris, ties by uri: computed here, independently of export."""
        scored = [(score, uri) for uri, score in self.score_of.items() if score is not None]
        return [uri for _, uri in sorted(scored)[:n]]


def png(colour: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def draft(name: str) -> str:
    return f"A painting of {name} with a red boat on the left."


def row(uri: str, index: int, source: Source) -> dict:
    scored = source.score is not None
    lineage = {
        "model": "tiny",
        "revision": "0",
        "engine": "transformers",
        "prompt_template": TEMPLATE,
        "prompt_sha256": "ab" * 32,
    }
    facts = [
        {
            "fact": "There is a red boat.",
            "verdict": "consistent",
            "reason": "visible",
            "correction": None,
        },
        {
            "fact": "The boat is on the left.",
            "verdict": "inconsistent",
            "reason": "it is on the right",
            "correction": "The boat is on the right.",
        },
    ]
    return {
        "uri": uri,
        "input_index": index,
        **dict.fromkeys(records.CATALOGUE_COLUMNS),
        "title": source.name,
        "draft_caption": draft(source.name),
        "draft_style": "detailed",
        "draft_caption_lineage": lineage,
        "fact_checks": facts if scored else None,
        "critic_score": source.score,
        "final_caption": f"A painting of {source.name} with a red boat on the right."
        if scored
        else None,
        "final_caption_lineage": lineage if scored else None,
        "health_flags": [{"field": "draft_caption", "rule": "too_long", "detail": "312 chars"}],
        "image": png(source.colour),
        "embedding": [0.5] * 16,
        "run_id": "run-1",
        "factory_version": "0.1.0",
    }


def captions_schema(with_flags: bool = True) -> pa.Schema:
    stage_fields = [
        pa.field("draft_caption", pa.string()),
        pa.field("draft_style", pa.string()),
        pa.field("draft_caption_lineage", records.LINEAGE_TYPE),
        pa.field("fact_checks", pa.list_(FACT_TYPE)),
        pa.field("critic_score", pa.float64()),
        pa.field("final_caption", pa.string()),
        pa.field("final_caption_lineage", records.LINEAGE_TYPE),
        *([pa.field("health_flags", pa.list_(FLAG_TYPE))] if with_flags else []),
        pa.field("image", pa.binary()),
        pa.field("embedding", pa.list_(pa.float32())),
    ]
    return records.captions_schema(stage_fields)


def write_shard(output: str, name: str, rows: list[dict], schema: pa.Schema) -> None:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), buffer)
    uris.write_bytes_atomically(uris.join(output, "captions", name), buffer.getvalue())


def build(root: str, bucket: str) -> FakeRun:
    """Sources under root/images and s3://bucket/src; the run output under root/run.

    Two shards, the second written by a config without health checks (no health_flags
    column), as a resumed run with a changed config leaves them, and a half-written one.
    """
    uri_of = {}
    for source in SOURCES:
        if source.s3:
            uri = f"s3://{bucket}/src/{source.name}"
        else:
            uri = os.path.join(root, "images", source.name)
        uris.write_bytes_atomically(uri, png(source.colour))
        uri_of[source.name] = uri
    rows = [row(uri_of[s.name], index, s) for index, s in enumerate(SOURCES)]
    output = os.path.join(root, "run")
    write_shard(output, "part-0001.parquet", rows[:4], captions_schema())
    without_flags = [{k: v for k, v in r.items() if k != "health_flags"} for r in rows[4:]]
    write_shard(output, "part-0002.parquet", without_flags, captions_schema(with_flags=False))
    # an uncommitted shard of a crashed writer, which readers must not see
    uris.write_bytes_atomically(uris.join(output, "captions", ".tmp-9-part-3.parquet"), b"PAR1")
    return FakeRun(
        output=output,
        uri_of=uri_of,
        colour_of={uri_of[s.name]: s.colour for s in SOURCES},
        score_of={uri_of[s.name]: s.score for s in SOURCES},
    )
