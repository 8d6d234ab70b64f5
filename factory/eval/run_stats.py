"""What a caption run's outputs say about it, without references.

Reads run.json, captions/ (shard by shard, only the columns the numbers need: never the
image or embedding), rejected/ and duplicates/ from a local folder or s3:// prefix. A run
of millions of rows is never held in memory: counters and compact number arrays are
accumulated per shard, and only two bounded sets of rows are kept, the first
`sample_size` images in listing order (diversity) and the `gallery_size` lowest critic
scores (the report's gallery).
"""

from __future__ import annotations

import heapq
from array import array
from collections import Counter
from dataclasses import dataclass, field

import pyarrow.parquet as pq

from factory.eval.diversity import Embed, caption_diversity, fast_edit_distance
from factory.eval.hallucination import (
    HallucinationConfig,
    HallucinationTally,
    ObjectLexicon,
    build_lexicon,
    expert_objects,
)
from factory.eval.vqa import abstains
from factory.io import outputs, uris

LOOP_TEXT_COLUMNS = ("expanded_caption", "draft_caption", "final_caption")
STAT_COLUMNS = ("uri", "input_index", "critic_score", "fact_checks", "ocr", "ocr_text")
STAT_COLUMNS += ("category", "health_flags", "qa", "tags", "objects")


@dataclass
class RunStats:
    output: str
    run: dict  # run.json as written (empty when missing)
    text_columns: list[str]  # caption_<style> columns, then the loop's texts
    accepted: int = 0
    rejected_reasons: Counter = field(default_factory=Counter)
    duplicates: int = 0
    sample: list[dict] = field(default_factory=list)  # first images in listing order
    examples: list[dict] = field(default_factory=list)  # lowest critic scores
    words: dict[str, array] = field(default_factory=dict)  # column -> word counts
    critic_scores: array = field(default_factory=lambda: array("d"))
    ocr_lines: array = field(default_factory=lambda: array("I"))
    counters: dict[str, Counter] = field(default_factory=dict)
    records_with_flags: int = 0
    qa_pairs: int = 0
    qa_cannot_tell: int = 0
    hallucination: dict[str, HallucinationTally] = field(default_factory=dict)


def caption_text_columns(names: list[str]) -> list[str]:
    styles = [n for n in names if n.startswith("caption_") and not n.endswith("_lineage")]
    return styles + [name for name in LOOP_TEXT_COLUMNS if name in names]


def sample_order(row: dict) -> tuple:
    return (row.get("input_index") or 0, row["uri"])


def gallery_order(row: dict) -> tuple:
    """Lowest critic score first (where a reviewer looks), unscored rows last."""
    score = row.get("critic_score")
    return (score is None, score if score is not None else 0.0, *sample_order(row))


def load_run(
    output: str,
    sample_size: int = 100,
    gallery_size: int = 12,
    hallucination: HallucinationConfig | None = None,
) -> RunStats:
    filesystem, shards = outputs.shard_paths(output, "captions")
    names = pq.read_schema(shards[0], filesystem=filesystem).names if shards else []
    stats = RunStats(output, outputs.read_json(uris.join(output, "run.json")) or {}, [])
    stats.text_columns = caption_text_columns(names)
    stats.words = {column: array("I") for column in stats.text_columns}
    stats.counters = {name: Counter() for name in ("categories", "verdicts", "flags", "qa")}
    tagged = hallucination is not None and bool({"tags", "objects"} & set(names))
    lexicon = build_lexicon(hallucination) if tagged else None
    columns = [n for n in names if n in STAT_COLUMNS or n in stats.text_columns]
    for shard in shards:
        rows = pq.read_table(shard, filesystem=filesystem, columns=columns).to_pylist()
        _add_rows(stats, rows, lexicon, hallucination)
        stats.sample = heapq.nsmallest(sample_size, stats.sample + rows, key=sample_order)
        stats.examples = heapq.nsmallest(gallery_size, stats.examples + rows, key=gallery_order)
    rejected = outputs.read_output(output, "rejected", columns=["stage", "reason"])
    for row in rejected.to_pylist() if rejected is not None else []:
        stats.rejected_reasons[f"{row['stage']}/{row['reason']}"] += 1
    duplicates = outputs.read_output(output, "duplicates", columns=["uri"])
    stats.duplicates = duplicates.num_rows if duplicates is not None else 0
    return stats


def _add_rows(
    stats: RunStats,
    rows: list[dict],
    lexicon: ObjectLexicon | None,
    config: HallucinationConfig | None,
) -> None:
    stats.accepted += len(rows)
    counters = stats.counters
    for row in rows:
        for column in stats.text_columns:
            if row.get(column):
                stats.words[column].append(len(row[column].split()))
        if row.get("critic_score") is not None:
            stats.critic_scores.append(row["critic_score"])
        if "ocr" in row:
            stats.ocr_lines.append(len(row["ocr"] or []))
        if row.get("category"):
            counters["categories"][row["category"]] += 1
        for check in row.get("fact_checks") or []:
            counters["verdicts"][check.get("verdict") or "unparsed"] += 1
        flags = row.get("health_flags") or []
        stats.records_with_flags += bool(flags)
        counters["flags"].update(f"{flag['rule']} ({flag['field']})" for flag in flags)
        for pair in row.get("qa") or []:
            stats.qa_pairs += 1
            counters["qa"][pair.get("category") or "unknown"] += 1
            stats.qa_cannot_tell += abstains(pair.get("answer") or "")
    if lexicon is not None and config is not None:
        experts = {
            row["uri"]: expert_objects(row.get("tags"), row.get("objects"), lexicon, config)
            for row in rows
        }
        for column in stats.text_columns:
            tally = stats.hallucination.setdefault(column, HallucinationTally())
            tally.add({row["uri"]: row.get(column) or "" for row in rows}, experts, lexicon)


def summarise(stats: RunStats, embed: Embed | None = None) -> dict:
    """The run's numbers; semantic diversity only with `embed` (it loads a model)."""
    run, sample, columns = stats.run, stats.sample, stats.text_columns
    # all pairs of 100 long captions in pure Python would stall the run's report
    edits = fast_edit_distance()
    counts = run.get("counts") or {
        "accepted": stats.accepted,
        "rejected": sum(stats.rejected_reasons.values()),
        "duplicates": stats.duplicates,
    }
    summary = {
        "counts": counts,
        "rejected_reasons": dict(stats.rejected_reasons.most_common()),
        # a run.json since cumulative records: this run apart, and every run into the output
        "this_run": run.get("this_run"),
        "runs": run.get("runs", []),
        "stage_seconds": run.get("stage_seconds", {}),
        "wall_seconds": run.get("wall_seconds"),
        "skipped_stages": run.get("skipped_stages", {}),
        "accepted_rows_read": stats.accepted,
        "caption_words": {column: describe(stats.words[column]) for column in columns},
        "critic_score": describe(stats.critic_scores),
        "fact_verdicts": dict(stats.counters["verdicts"].most_common()),
        "ocr_lines": describe(stats.ocr_lines),
        "categories": dict(stats.counters["categories"].most_common()),
        "health_flags": dict(stats.counters["flags"].most_common()),
        "records_with_flags": stats.records_with_flags,
        "qa": {
            "pairs": stats.qa_pairs,
            "per_category": dict(stats.counters["qa"].most_common()),
            "cannot_tell": stats.qa_cannot_tell,
        },
        "diversity_sample": len(sample),
        "edit_distances": "computed" if edits else "left out: pip install rapidfuzz",
        "diversity": {
            "across_styles_per_image": caption_diversity(
                {row["uri"]: [row.get(c) for c in columns] for row in sample}, embed, edits
            ),
            **{
                f"across_images_{column}": caption_diversity(
                    {"all": [row[column] for row in sample if row.get(column)]}, embed, edits
                )
                for column in columns
            },
        },
    }
    if stats.hallucination:
        summary["hallucination"] = {c: t.result() for c, t in stats.hallucination.items()}
    return summary


def describe(values) -> dict:
    """n, mean, median, min, max, and the values themselves for the plots."""
    if not len(values):
        return {"n": 0, "values": values}
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
    """The summary minus the raw value arrays, for metrics.json."""
    if isinstance(summary, dict):
        return {k: without_values(v) for k, v in summary.items() if k != "values"}
    return summary
