"""What `factory eval` does: load, score, print, write."""

from __future__ import annotations

import sys

from factory import records
from factory.eval.diversity import Embed
from factory.eval.eval_config import EvalConfig
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


DEFAULT_OUT = "eval-output"


def evaluate_files(
    predictions_uri: str,
    references_uri: str,
    config: EvalConfig,
    id_column: str = "image_id",
    prediction_column: str | None = None,
    reference_column: str | None = None,
    images_uri: str | None = None,
    out: str = DEFAULT_OUT,
) -> int:
    """Score predictions against references; metrics.json and report.html go into `out`."""
    from factory.eval.gallery import folder_images
    from factory.eval.inputs import read_table
    from factory.eval.metrics_report import eval_report_html
    from factory.eval.score_tables import evaluate_tables

    predictions, references = read_table(predictions_uri), read_table(references_uri)
    for name, table in (("predictions", predictions), ("references", references)):
        if id_column not in table.column_names:
            raise ValueError(
                f"{name} have no {id_column!r} column (columns: {table.column_names}); "
                "name the key with --id-column"
            )
    ids = [str(key) for key in predictions.column(id_column).to_pylist()]
    images = folder_images(images_uri, ids) if images_uri else {}
    embed, why_not = load_embedder(config)
    evaluation = evaluate_tables(
        predictions,
        references,
        config,
        id_column,
        prediction_column,
        reference_column,
        images,
        embed,
    )
    if why_not:
        evaluation.notes.append(why_not)
    sources = {"predictions": predictions_uri, "references": references_uri}
    if images_uri:
        sources["images"] = f"{images_uri} ({len(images)} found)"
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


def evaluate_run(
    run: str,
    config: EvalConfig,
    references_uri: str | None = None,
    baseline: str | None = None,
    id_column: str = "image_id",
    reference_column: str | None = None,
    out: str | None = None,
) -> int:
    """Describe a caption run (against references, against a baseline run); metrics.json
    and report.html go into `out`, the run's own output unless given."""
    from factory.eval.run_report import write_run_report
    from factory.eval.run_stats import without_values

    if not _is_run_output(run):
        raise ValueError(f"{run} holds no run.json and no captions/rejected/duplicates shards")
    if baseline and not _is_run_output(baseline):
        raise ValueError(f"--baseline {baseline} holds no run.json and no output shards")
    out = out or run
    embed, why_not = load_embedder(config)
    extra, against = (), None
    if references_uri:
        from factory.eval.inputs import read_table
        from factory.eval.run_references import references_section, score_run_against

        against = score_run_against(
            run, read_table(references_uri), config, id_column, reference_column, embed
        )
        extra = (references_section(against),)
    before = None
    if baseline:
        from factory.eval.run_compare import baseline_summary

        before = (baseline, baseline_summary(baseline, config))
    report, summary = write_run_report(run, config, embed, out, extra, before)
    metrics = {"kind": "run", "output": run, **without_values(summary)}
    if against is not None:
        metrics["against_references"] = against
    measures = None
    if before is not None:
        from factory.eval.run_compare import compare

        measures = compare(before[1], summary)
        metrics["against_baseline"] = {"baseline": baseline, "measures": measures}
    if why_not:
        metrics["notes"] = [why_not]
    outputs.write_json(uris.join(out, "metrics.json"), metrics)
    counts = dict(summary["counts"])
    counts["critic_score_mean"] = summary["critic_score"].get("mean")
    counts["records_with_flags"] = summary["records_with_flags"]
    print_table(f"caption run {run} (report: {report})", counts)
    for reason, count in summary["rejected_reasons"].items():
        print(f"  rejected {count:>5}  {reason}")
    if why_not:
        print(f"  NOTE: {why_not}")
    for column, scores in (against or {}).get("captions", {}).items():
        print_table(f"{column} against {references_uri}", scores)
    if measures is not None:
        from factory.eval.run_compare import printable

        print_table(f"against baseline {baseline}", printable(measures))
    if against and "qa" in against:
        qa = {k: v for k, v in against["qa"].items() if not isinstance(v, dict)}
        print_table(f"qa against {references_uri}", qa)
    return 0


def print_table(title: str, values: dict) -> None:
    print(title)
    width = max((len(name) for name in values), default=0)
    for name, value in values.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {name:<{width}}  {shown}")
    sys.stdout.flush()


def _is_run_output(output: str) -> bool:
    if uris.size_of(uris.join(output, "run.json")) is not None:
        return True
    return any(outputs.shard_paths(output, folder)[1] for folder in records.OUTPUT_DIRS.values())


def _write(out: str, metrics: dict, html_text: str) -> None:
    outputs.write_json(uris.join(out, "metrics.json"), metrics)
    uris.write_bytes_atomically(uris.join(out, "report.html"), html_text.encode("utf-8"))
