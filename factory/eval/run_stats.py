"""What a caption run's outputs say about it, without references.

Reads run.json, captions/ (without the bulky image and embedding columns), rejected/ and
duplicates/ from a local folder or s3:// prefix, and reduces them to the numbers and
distributions the report shows: counts per outcome and stage, rejected reasons, stage
seconds, caption lengths per style, critic scores, OCR lines, categories, health flags,
QA categories and abstentions, diversity, and hallucination against the expert tags.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from factory.eval.diversity import Embed, caption_diversity
from factory.eval.hallucination import (
    HallucinationConfig,
    build_lexicon,
    expert_objects,
    hallucination_scores,
)
from factory.eval.vqa import abstains
from factory.io import outputs, uris

BULKY_COLUMNS = frozenset({"image", "embedding"})
LOOP_TEXT_COLUMNS = ("expanded_caption", "draft_caption", "final_caption")


@dataclass
class RunStats:
    output: str
    run: dict  # run.json as written (empty when missing)
    captions: list[dict]  # accepted rows without bulky columns
    rejected: list[dict]
    duplicates: int
    text_columns: list[str]  # caption_<style> columns, then the loop's texts
    summary: dict = field(default_factory=dict)  # the numbers metrics.json holds


def caption_text_columns(names: list[str]) -> list[str]:
    styles = [n for n in names if n.startswith("caption_") and not n.endswith("_lineage")]
    return styles + [name for name in LOOP_TEXT_COLUMNS if name in names]


def read_accepted(output: str) -> pa.Table | None:
    """captions/ without the columns a report never needs in bulk."""
    filesystem, shards = outputs.shard_paths(output, "captions")
    if not shards:
        return None
    names = pq.read_schema(shards[0], filesystem=filesystem).names
    keep = [name for name in names if name not in BULKY_COLUMNS]
    return outputs.read_output(output, "captions", columns=keep)


def load_run(output: str) -> RunStats:
    captions = read_accepted(output)
    rejected = outputs.read_output(output, "rejected")
    duplicates = outputs.read_output(output, "duplicates", columns=["uri"])
    rows = captions.to_pylist() if captions is not None else []
    return RunStats(
        output=output,
        run=outputs.read_json(uris.join(output, "run.json")) or {},
        captions=rows,
        rejected=rejected.to_pylist() if rejected is not None else [],
        duplicates=duplicates.num_rows if duplicates is not None else 0,
        text_columns=caption_text_columns(captions.column_names if captions is not None else []),
    )


def summarise(
    stats: RunStats,
    embed: Embed | None = None,
    hallucination: HallucinationConfig | None = None,
    diversity_sample: int = 100,
) -> dict:
    """The run's numbers; semantic diversity only with `embed` (it loads a model)."""
    rows = stats.captions
    # the first images in listing order: the same sample on every rerun
    sample = sorted(rows, key=lambda row: (row.get("input_index") or 0, row["uri"]))
    sample = sample[:diversity_sample]
    run = stats.run
    summary = {
        "counts": run.get("counts")
        or {"accepted": len(rows), "rejected": len(stats.rejected), "duplicates": stats.duplicates},
        "rejected_reasons": dict(
            Counter(f"{r['stage']}/{r['reason']}" for r in stats.rejected).most_common()
        ),
        "stage_seconds": run.get("stage_seconds", {}),
        "wall_seconds": run.get("wall_seconds"),
        "skipped_stages": run.get("skipped_stages", {}),
        "caption_words": {
            column: _describe([len(text.split()) for text in _texts(rows, column)])
            for column in stats.text_columns
        },
        "critic_score": _describe(_values(rows, "critic_score")),
        "fact_verdicts": dict(
            Counter(
                check.get("verdict") or "unparsed"
                for row in rows
                for check in row.get("fact_checks") or []
            )
        ),
        "ocr_lines": _describe([len(row.get("ocr") or []) for row in rows if "ocr" in row]),
        "categories": dict(Counter(_values(rows, "category")).most_common()),
        "health_flags": dict(
            Counter(
                f"{flag['rule']} ({flag['field']})"
                for row in rows
                for flag in row.get("health_flags") or []
            ).most_common()
        ),
        "records_with_flags": sum(bool(row.get("health_flags")) for row in rows),
        "qa": _qa_summary(rows),
        "diversity_sample": len(sample),
        "diversity": {
            "across_styles_per_image": caption_diversity(
                {row["uri"]: [row.get(c) for c in stats.text_columns] for row in sample}, embed
            ),
            **{
                f"across_images_{column}": caption_diversity(
                    {"all": list(_texts(sample, column))}, embed
                )
                for column in stats.text_columns
            },
        },
    }
    if hallucination is not None and any(("tags" in r or "objects" in r) for r in rows):
        summary["hallucination"] = _hallucination(rows, stats.text_columns, hallucination)
    stats.summary = summary
    return summary


def _hallucination(rows: list[dict], columns: list[str], config: HallucinationConfig) -> dict:
    lexicon = build_lexicon(config)
    experts = {
        row["uri"]: expert_objects(row.get("tags"), row.get("objects"), lexicon, config)
        for row in rows
    }
    return {
        column: hallucination_scores(
            {row["uri"]: row.get(column) or "" for row in rows}, experts, lexicon
        )
        for column in columns
    }


def _qa_summary(rows: list[dict]) -> dict:
    pairs = [pair for row in rows for pair in row.get("qa") or []]
    return {
        "pairs": len(pairs),
        "per_category": dict(Counter(p.get("category") or "unknown" for p in pairs)),
        "cannot_tell": sum(abstains(p.get("answer") or "") for p in pairs),
    }


def _texts(rows: list[dict], column: str):
    return (row[column] for row in rows if row.get(column))


def _values(rows: list[dict], column: str) -> list:
    return [row[column] for row in rows if row.get(column) is not None]


def _describe(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "values": []}
    ordered = sorted(values)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2
    return {
        "n": len(values),
        "mean": sum(values) / len(values),
        "median": median,
        "min": ordered[0],
        "max": ordered[-1],
        "values": values,  # for the plots; dropped from metrics.json
    }


def without_values(summary: dict) -> dict:
    """The summary minus the raw value lists, for metrics.json."""
    if isinstance(summary, dict):
        return {k: without_values(v) for k, v in summary.items() if k != "values"}
    return summary
