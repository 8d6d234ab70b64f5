"""A caption run's own texts scored against references (`factory eval --run OUT --references R`).

Each caption column of the run (every style, the expanded and the final caption) is one
set of predictions, keyed by `--id-column` (the run's `image_id`, or a catalogue column
such as `object_id` that the manifest carried); with QA references, the run's `qa` pairs
are scored instead. The numbers go into metrics.json and a "references" report section.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from factory.eval import html
from factory.eval.diversity import Embed
from factory.eval.eval_config import EvalConfig
from factory.eval.inputs import caption_references, is_qa, qa_items
from factory.eval.run_stats import caption_text_columns
from factory.eval.score_tables import evaluate_captions
from factory.eval.vqa import QAItem, score_vqa
from factory.io import outputs


def score_run_against(
    output: str,
    references: pa.Table,
    config: EvalConfig,
    id_column: str = "image_id",
    reference_column: str | None = None,
    embed: Embed | None = None,
) -> dict:
    """{"qa": scores} or {"captions": {column: corpus scores}, "pairs": ..., "notes": ...}."""
    rows = _run_rows(output, id_column)
    if is_qa(references):
        predictions = [
            QAItem(str(row[id_column]), pair["question"] or "", (pair["answer"] or "",))
            for row in rows
            for pair in row.get("qa") or []
        ]
        return {"qa": score_vqa(predictions, qa_items(references, id_column))}
    gold = caption_references(references, id_column, reference_column)
    result: dict = {"captions": {}, "pairs": {}, "notes": []}
    for column in caption_text_columns(list(rows[0]) if rows else []):
        predicted = {str(r[id_column]): r[column] for r in rows if r.get(column)}
        if not set(predicted) & set(gold):
            result["notes"].append(f"{column}: no image id in common with the references")
            continue
        evaluation = evaluate_captions(predicted, gold, config, images={}, embed=embed)
        result["captions"][column] = evaluation.metrics["metrics"]
        result["pairs"][column] = evaluation.metrics["pairs"]
        result["notes"].extend(f"{column}: {note}" for note in evaluation.notes)
    return result


def _run_rows(output: str, id_column: str) -> list[dict]:
    filesystem, shards = outputs.shard_paths(output, "captions")
    if not shards:
        raise ValueError(f"{output} has no captions/ shards to score")
    names = pq.read_schema(shards[0], filesystem=filesystem).names
    if id_column not in names:
        raise ValueError(f"the run has no column {id_column!r}; pick one with --id-column")
    wanted = [id_column, *caption_text_columns(names), *(["qa"] if "qa" in names else [])]
    return outputs.read_output(output, "captions", columns=wanted).to_pylist()


def references_section(scores: dict) -> str:
    if "qa" in scores:
        qa = scores["qa"]
        rows = [(k, v) for k, v in qa.items() if not isinstance(v, dict)]
        return html.section(
            "references", "Against references", html.table(["metric", "value"], rows)
        )
    captions = scores["captions"]
    names = list(next(iter(captions.values()), {}))
    rows = [(column, *(values.get(n) for n in names)) for column, values in captions.items()]
    notes = "".join(f'<p class="note">{html.esc(note)}</p>' for note in scores["notes"])
    return html.section(
        "references", "Against references", html.table(["caption", *names], rows), notes
    )
