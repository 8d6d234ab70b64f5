"""The HTML report of a caption run: one self-contained file beside its outputs.

Sections (their ids are the contract tests check): summary, counts, stages, rejected,
distributions, health, qa, diversity, hallucination (when experts tagged the images) and
gallery. Plots and example images are embedded as data: URIs, so the file can be mailed.
"""

from __future__ import annotations

from collections import Counter

from factory.eval import html, plots
from factory.eval.diversity import Embed
from factory.eval.eval_config import AUTOMATIC_REPORT, EvalConfig
from factory.eval.gallery import run_gallery, run_thumbnails
from factory.eval.run_stats import RunStats, load_run, summarise
from factory.io import uris

REPORT_NAME = "report.html"
RUN_SECTIONS = ("summary", "counts", "stages", "rejected", "distributions", "health", "qa")
RUN_SECTIONS += ("diversity", "gallery")


def write_run_report(
    output: str,
    config: EvalConfig = AUTOMATIC_REPORT,
    embed: Embed | None = None,
    target: str | None = None,
    extra_sections: tuple[str, ...] = (),
    baseline: tuple[str, dict] | None = None,
) -> tuple[str, dict]:
    """Reads a run, writes report.html into `target` (default: the run's output folder);
    returns the report's URI and the run's numbers. `baseline`: (output, its numbers) for
    a section comparing the two runs."""
    stats = load_run(
        output, config.diversity_sample, config.report.gallery_size, config.hallucination
    )
    summary = summarise(stats, embed)
    if baseline is not None:
        from factory.eval.run_compare import baseline_section

        baseline_output, baseline_summary = baseline
        extra_sections = (
            baseline_section(baseline_summary, summary, baseline_output),
            *extra_sections,
        )
    examples = stats.examples
    images = {}
    if examples:
        wanted = [row["uri"] for row in examples]
        images = run_thumbnails(output, wanted, config.report.thumbnail_side)
    text = run_report_html(stats, summary, examples, images, config, extra_sections)
    target = uris.join(target or output, REPORT_NAME)
    uris.write_bytes_atomically(target, text.encode("utf-8"))
    return target, summary


def run_report_html(
    stats: RunStats,
    summary: dict,
    examples: list[dict],
    images: dict[str, str],
    config: EvalConfig,
    extra_sections: tuple[str, ...] = (),
) -> str:
    run = stats.run
    title = f"Caption run {run.get('run_id', '')}".strip()
    body = [
        _summary(stats),
        _counts(summary),
        _stages(summary),
        html.section(
            "rejected",
            "Rejected reasons",
            html.table(["stage/reason", "count"], summary["rejected_reasons"].items()),
        ),
        _distributions(stats, summary, config),
        html.section(
            "health",
            "Health flags",
            f"<p>{summary['records_with_flags']} of {stats.accepted} accepted records "
            "have at least one flag.</p>",
            html.table(["rule (field)", "count"], summary["health_flags"].items()),
        ),
        _qa(summary["qa"]),
        _diversity(summary["diversity"], summary["diversity_sample"]),
    ]
    if "hallucination" in summary:
        body.append(_hallucination(summary["hallucination"]))
    body.extend(extra_sections)
    body.append(run_gallery(examples, stats.text_columns, images))
    return html.page(title, body)


def _summary(stats: RunStats) -> str:
    run = stats.run
    versions = run.get("versions", {})
    rows = [
        ("output", stats.output),
        ("run id", run.get("run_id")),
        ("finished at", run.get("finished_at")),
        ("wall seconds", run.get("wall_seconds")),
        ("versions", ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))),
    ]
    notes = list(run.get("notes", []))
    # run.json's notes already name the skipped stages of newer runs
    for stage, why in run.get("skipped_stages", {}).items():
        if not any(note.startswith(f"skipped {stage}:") for note in notes):
            notes.append(f"skipped {stage}: {why}")
    if not run:
        notes.append("run.json is missing: counts come from the shards.")
    items = "".join(f"<li>{html.esc(note)}</li>" for note in notes)
    notes_html = f'<ul class="note">{items}</ul>' if items else ""
    return html.section("summary", "Summary", html.table(["field", "value"], rows), notes_html)


def _counts(summary: dict) -> str:
    counts, this_run, runs = summary["counts"], summary.get("this_run"), summary.get("runs")
    parts = [html.table(["outcome", "records"], counts.items())]
    if this_run and this_run["counts"].get("skipped_existing"):  # a resumed run
        parts.append(
            "<p>The output as a whole, above; this run's share of it "
            f"({html.esc(this_run.get('run_id'))}), below.</p>"
        )
        parts.append(html.table(["outcome", "records"], this_run["counts"].items()))
    if runs and len(runs) > 1:
        keys = ("accepted", "rejected", "duplicates", "skipped_existing")
        rows = [
            (
                run.get("run_id"),
                run.get("finished_at"),
                *((run.get("counts") or {}).get(k) for k in keys),
            )
            for run in runs
        ]
        parts.append(html.table(["run", "finished at", *keys], rows))
    return html.section("counts", "Counts", *parts)


# the caption pipeline's stage order (README "The pipeline"); others are listed after
PIPELINE_ORDER = ("list", "read", "validate", "fingerprint", "clip", "dedup", "ocr", "detect")
PIPELINE_ORDER += ("knowledge", "caption", "qa", "expand", "decompose", "critic", "rewrite")
PIPELINE_ORDER += ("health", "write")


def stage_flow(summary: dict) -> list[tuple]:
    """(stage, records in, rejected there, duplicates there, records out, seconds) in order.

    Records enter the first stage as inputs minus those already written by an earlier
    run; each stage passes on what it neither rejected nor (dedup) marked duplicate. The
    flow is this run's (`this_run` when run.json has it): its seconds are this run's.
    """
    this_run = summary.get("this_run") or {}
    counts = this_run.get("counts") or summary["counts"]
    reasons = this_run.get("rejected_reasons", summary["rejected_reasons"])
    seconds = summary["stage_seconds"]
    rejected_at: Counter = Counter()
    for key, count in reasons.items():
        rejected_at[key.split("/", 1)[0]] += count
    present = set(seconds) | set(rejected_at)
    names = [name for name in PIPELINE_ORDER if name in present]
    names += sorted(present - set(PIPELINE_ORDER))
    flowing = (counts.get("inputs") or 0) - (counts.get("skipped_existing") or 0)
    rows = []
    for name in names:
        duplicates = counts.get("duplicates", 0) if name == "dedup" else 0
        out = flowing - rejected_at.get(name, 0) - duplicates
        rows.append((name, flowing, rejected_at.get(name, 0), duplicates, out, seconds.get(name)))
        flowing = out
    return rows


def _stages(summary: dict) -> str:
    headers = ["stage", "records in", "rejected", "duplicates", "records out", "seconds"]
    return html.section(
        "stages",
        "Stages",
        "<p>Records through each stage in pipeline order; seconds are summed over workers.</p>",
        html.table(headers, stage_flow(summary)),
    )


def _distributions(stats: RunStats, summary: dict, config: EvalConfig) -> str:
    if not config.report.plots:
        return html.section("distributions", "Distributions", "<p>plots turned off</p>")
    if not plots.matplotlib_available():
        return html.section(
            "distributions",
            "Distributions",
            '<p class="note">matplotlib is not installed (pip install '
            "'caption-factory[eval]'): no plots.</p>",
        )
    lengths = {column: d.get("values", []) for column, d in summary["caption_words"].items()}
    figures = [
        ("caption length", plots.histogram(lengths, "Caption length", "words")),
        (
            "critic score",
            plots.histogram(
                {"critic_score": summary["critic_score"].get("values", [])},
                "Critic score (share of consistent facts)",
                "score",
                bins=[i / 10 for i in range(11)],
            ),
        ),
        (
            "OCR lines",
            plots.histogram(
                {"ocr": summary["ocr_lines"].get("values", [])}, "OCR lines per image", "lines"
            ),
        ),
        ("category", plots.bars(summary["categories"], "Museum category", "images")),
        ("fact verdicts", plots.bars(summary["fact_verdicts"], "Critic verdicts", "facts")),
        ("health flags", plots.bars(summary["health_flags"], "Health flags", "flags")),
    ]
    shown = [html.image(src, alt) for alt, src in figures if src]
    missing = [alt for alt, src in figures if not src]
    note = f"<p>No data for: {html.esc(', '.join(missing))}.</p>" if missing else ""
    stats_rows = [
        (column, d["n"], d.get("mean"), d.get("median"), d.get("min"), d.get("max"))
        for column, d in [
            *summary["caption_words"].items(),
            ("critic_score", summary["critic_score"]),
        ]
    ]
    return html.section(
        "distributions",
        "Distributions",
        f'<div class="plots">{"".join(shown)}</div>',
        note,
        html.table(["column", "n", "mean", "median", "min", "max"], stats_rows),
    )


def _qa(qa: dict) -> str:
    return html.section(
        "qa",
        "Question answering",
        f"<p>{qa['pairs']} pairs; {qa['cannot_tell']} answered “cannot tell”.</p>",
        html.table(["category", "pairs"], sorted(qa["per_category"].items())),
    )


def _diversity(diversity: dict, sample: int) -> str:
    names = ["captions", "type_token_ratio", "corpus_type_token_ratio"]
    names += ["edit_distance_chars", "edit_distance_words", "semantic_diversity"]
    rows = [(scope, *(values.get(name) for name in names)) for scope, values in diversity.items()]
    return html.section(
        "diversity",
        "Diversity",
        f"<p>Over the first {sample} accepted images: per image across its caption styles, "
        "and per style across images (semantic diversity only when an embedder is "
        "configured).</p>",
        html.table(["scope", *(DIVERSITY_LABELS[name] for name in names)], rows),
    )


DIVERSITY_LABELS = {
    "captions": "captions",
    "type_token_ratio": "TTR",
    "corpus_type_token_ratio": "TTR, pooled",
    "edit_distance_chars": "edit distance (chars)",
    "edit_distance_words": "edit distance (words)",
    "semantic_diversity": "semantic",
}


def _hallucination(scores: dict) -> str:
    rows = [
        (
            column,
            s["judged"],
            s["chair_i"],
            s["chair_s"],
            s["coverage"],
            ", ".join(f"{k} {v}" for k, v in s["unsupported_objects"].items()),
        )
        for column, s in scores.items()
    ]
    return html.section(
        "hallucination",
        "Hallucination and coverage",
        "<p>CHAIR_i: mentioned objects the tagger/detector did not see, over mentioned "
        "objects; CHAIR_s: captions with one; coverage: expert objects mentioned.</p>",
        html.table(["caption", "judged", "CHAIR_i", "CHAIR_s", "coverage", "unsupported"], rows),
    )
