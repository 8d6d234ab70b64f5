"""What `factory eval` does once its arguments are parsed: load, score, print, write."""

from __future__ import annotations

import argparse

from factory import records
from factory.eval.cli import DEFAULT_OUT, print_table
from factory.eval.config import EvalConfig
from factory.eval.diversity import Embed
from factory.io import outputs, uris


def load_embedder(config: EvalConfig) -> tuple[Embed | None, str | None]:
    """The configured sentence embedder, or None and why not (semantic diversity is skipped)."""
    if not config.semantic_diversity:
        return None, None
    try:
        from factory.models.sentence_embedder import SentenceEmbedder

        return SentenceEmbedder(config.embedder).embed, None
    except (ImportError, OSError, ValueError) as error:
        return None, f"semantic diversity skipped: {type(error).__name__}: {error}"


def evaluate_files(args: argparse.Namespace, config: EvalConfig) -> int:
    from factory.eval.eval_report import eval_report_html
    from factory.eval.evaluate import evaluate_tables
    from factory.eval.gallery import folder_images
    from factory.eval.inputs import read_table

    predictions, references = read_table(args.predictions), read_table(args.references)
    for name, table in (("predictions", predictions), ("references", references)):
        if args.id_column not in table.column_names:
            raise ValueError(
                f"{name} have no {args.id_column!r} column (columns: {table.column_names}); "
                "name the key with --id-column"
            )
    ids = [str(key) for key in predictions.column(args.id_column).to_pylist()]
    images = folder_images(args.images, ids) if args.images else {}
    embed, why_not = load_embedder(config)
    evaluation = evaluate_tables(
        predictions,
        references,
        config,
        args.id_column,
        args.prediction_column,
        args.reference_column,
        images,
        embed,
    )
    if why_not:
        evaluation.notes.append(why_not)
    sources = {"predictions": args.predictions, "references": args.references}
    if args.images:
        sources["images"] = f"{args.images} ({len(images)} found)"
    out = args.out or DEFAULT_OUT
    metrics = evaluation.metrics
    html_text = eval_report_html(evaluation, sources, images, config)
    _write(out, metrics, html_text)
    if evaluation.kind == "qa":
        shown = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    else:
        shown = metrics["metrics"]
    print_table(f"{evaluation.kind} metrics ({uris.join(out, 'metrics.json')})", shown)
    for note in evaluation.notes:
        print(f"  NOTE: {note}")
    return 0


def evaluate_run(args: argparse.Namespace, config: EvalConfig) -> int:
    from factory.eval.report import write_run_report
    from factory.eval.run_stats import without_values

    if not _is_run_output(args.run):
        raise ValueError(f"{args.run} holds no run.json and no captions/rejected/duplicates shards")
    if args.baseline and not _is_run_output(args.baseline):
        raise ValueError(f"--baseline {args.baseline} holds no run.json and no output shards")
    out = args.out or args.run
    embed, why_not = load_embedder(config)
    extra, against = (), None
    if args.references:
        from factory.eval.inputs import read_table
        from factory.eval.run_references import references_section, score_run_against

        against = score_run_against(
            args.run,
            read_table(args.references),
            config,
            args.id_column,
            args.reference_column,
            embed,
        )
        extra = (references_section(against),)
    baseline = None
    if args.baseline:
        from factory.eval.run_compare import baseline_summary

        baseline = (args.baseline, baseline_summary(args.baseline, config))
    report, summary = write_run_report(args.run, config, embed, out, extra, baseline)
    metrics = {"kind": "run", "output": args.run, **without_values(summary)}
    if against is not None:
        metrics["against_references"] = against
    measures = None
    if baseline is not None:
        from factory.eval.run_compare import compare

        measures = compare(baseline[1], summary)
        metrics["against_baseline"] = {"baseline": args.baseline, "measures": measures}
    if why_not:
        metrics["notes"] = [why_not]
    outputs.write_json(uris.join(out, "metrics.json"), metrics)
    counts = dict(summary["counts"])
    counts["critic_score_mean"] = summary["critic_score"].get("mean")
    counts["records_with_flags"] = summary["records_with_flags"]
    print_table(f"caption run {args.run} (report: {report})", counts)
    for reason, count in summary["rejected_reasons"].items():
        print(f"  rejected {count:>5}  {reason}")
    if why_not:
        print(f"  NOTE: {why_not}")
    for column, scores in (against or {}).get("captions", {}).items():
        print_table(f"{column} against {args.references}", scores)
    if measures is not None:
        from factory.eval.run_compare import printable

        print_table(f"against baseline {args.baseline}", printable(measures))
    if against and "qa" in against:
        qa = {k: v for k, v in against["qa"].items() if not isinstance(v, dict)}
        print_table(f"qa against {args.references}", qa)
    return 0


def _is_run_output(output: str) -> bool:
    if uris.size_of(uris.join(output, "run.json")) is not None:
        return True
    return any(outputs.shard_paths(output, folder)[1] for folder in records.OUTPUT_DIRS.values())


def _write(out: str, metrics: dict, html_text: str) -> None:
    outputs.write_json(uris.join(out, "metrics.json"), metrics)
    uris.write_bytes_atomically(uris.join(out, "report.html"), html_text.encode("utf-8"))
