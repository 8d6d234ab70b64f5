"""A caption run beside a baseline run: `factory eval --run AFTER --baseline BEFORE`.

The flywheel's last question (recaptioned with a new adapter: what moved?) asked of the
numbers that need no references: accepted and rejected records, the mean critic score,
the share of records with health flags (all of them and each rule) and the mean words of
every text column both runs have. They go into metrics.json (`against_baseline`), the
printed table and a report section with both runs' critic scores and lengths overlaid.
"""

from __future__ import annotations

from collections.abc import Callable

from factory.eval import html, plots
from factory.eval.eval_config import EvalConfig
from factory.eval.run_stats import load_run, summarise

SECTION = "baseline"


def baseline_summary(output: str, config: EvalConfig) -> dict:
    """The baseline run's numbers, read the way the run's own are (no embedder needed)."""
    stats = load_run(
        output, config.diversity_sample, config.report.gallery_size, config.hallucination
    )
    return summarise(stats)


def compare(baseline: dict, run: dict) -> dict[str, dict]:
    """{measure: {"baseline": value, "run": value, "change": run - baseline}}."""
    measures: dict[str, dict] = {}

    def add(name: str, value: Callable[[dict], float | None]) -> None:
        before, after = value(baseline), value(run)
        change = None if before is None or after is None else after - before
        measures[name] = {"baseline": before, "run": after, "change": change}

    add("accepted", lambda s: s["counts"].get("accepted"))
    add("rejected", lambda s: s["counts"].get("rejected"))
    add("critic_score_mean", lambda s: s["critic_score"].get("mean"))
    add("records_with_flags_share", lambda s: _share(s["records_with_flags"], s))
    for flag in sorted(set(baseline["health_flags"]) | set(run["health_flags"])):
        add(f"flag_share {flag}", lambda s, f=flag: _share(s["health_flags"].get(f, 0), s))
    for column in run["caption_words"]:
        if column in baseline["caption_words"]:
            add(f"words_mean {column}", lambda s, c=column: s["caption_words"][c].get("mean"))
    return measures


def _share(count: int, summary: dict) -> float | None:
    records = summary["accepted_rows_read"]
    return count / records if records else None


def printable(measures: dict[str, dict]) -> dict[str, str]:
    """measure -> "baseline -> run (change)", for the printed table."""
    return {
        name: f"{html.number(m['baseline'])} -> {html.number(m['run'])}"
        + (f" ({m['change']:+.4g})" if m["change"] is not None else "")
        for name, m in measures.items()
    }


def baseline_section(baseline: dict, run: dict, baseline_output: str) -> str:
    measures = compare(baseline, run)
    rows = [(name, m["baseline"], m["run"], m["change"]) for name, m in measures.items()]
    parts = [
        f"<p>This run beside the baseline run {html.esc(baseline_output)}.</p>",
        html.table(["measure", "baseline", "this run", "change"], rows),
    ]
    if plots.matplotlib_available():
        figures = {
            "critic score, baseline and this run": plots.histogram(
                {
                    "baseline": baseline["critic_score"].get("values", []),
                    "this run": run["critic_score"].get("values", []),
                },
                "Critic score, baseline and this run",
                "score",
                bins=[i / 10 for i in range(11)],
            )
        }
        common = [c for c in run["caption_words"] if c in baseline["caption_words"]]
        if common:  # the last text column: the loop's final caption when it ran
            column = common[-1]
            figures[f"{column} length, baseline and this run"] = plots.histogram(
                {
                    "baseline": baseline["caption_words"][column].get("values", []),
                    "this run": run["caption_words"][column].get("values", []),
                },
                f"{column} length, baseline and this run",
                "words",
            )
        parts += [html.image(src, alt) for alt, src in figures.items() if src]
    return html.section(SECTION, "Against the baseline run", *parts)
