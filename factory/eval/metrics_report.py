"""The HTML report of `factory eval` against references (captions or museum QA).

Sections: summary, metrics, distributions (captions), per_category (QA), diversity
(captions) and gallery (captions: the lowest-scoring images first, with their image when
`--images` finds it, the prediction, every reference and the image's scores).
"""

from __future__ import annotations

from factory.eval import html, plots
from factory.eval.eval_config import EvalConfig
from factory.eval.gallery import thumbnail
from factory.eval.score_tables import Evaluation

# the per-image score the gallery sorts by, first found
GALLERY_ORDER = ("CIDEr-D", "BLEU-4", "ROUGE-L", "ROUGE-1", "CLIPScore")


def eval_report_html(
    evaluation: Evaluation, sources: dict[str, str], images: dict[str, bytes], config: EvalConfig
) -> str:
    body = [
        html.section(
            "summary",
            "Summary",
            html.table(["input", "where"], sources.items()),
            *(f'<p class="note">{html.esc(note)}</p>' for note in evaluation.notes),
        )
    ]
    if evaluation.kind == "qa":
        body.extend(_qa_sections(evaluation.metrics))
    else:
        body.extend(_caption_sections(evaluation, images, config))
    return html.page(f"Evaluation ({evaluation.kind})", body)


def _qa_sections(metrics: dict) -> list[str]:
    names = ["questions", "exact_match", "complete_precision", "complete_recall"]
    names += ["partial_precision", "partial_recall"]
    overall = [(name, metrics.get(name)) for name in names]
    overall += [(f"BLEU-{n}", metrics.get(f"BLEU-{n}")) for n in range(1, 5)]
    overall += [
        ("unanswerable answered 'cannot tell'", metrics["unanswerable_abstention_rate"]),
        ("answerable answered 'cannot tell'", metrics["answerable_abstention_rate"]),
        ("missing predictions", metrics["missing_predictions"]),
        ("predictions without a reference question", metrics["unmatched_predictions"]),
    ]
    groups = {**metrics["per_category"], "(answerable)": metrics["answerable"]}
    groups["(unanswerable)"] = metrics["unanswerable"]
    rows = [(name, *(values[n] for n in names)) for name, values in groups.items()]
    return [
        html.section("metrics", "Metrics", html.table(["metric", "value"], overall)),
        html.section("per_category", "Per category", html.table(["category", *names], rows)),
    ]


def _caption_sections(evaluation: Evaluation, images: dict[str, bytes], config: EvalConfig):
    metrics = evaluation.metrics
    pairs = metrics["pairs"]
    sections = [
        html.section(
            "metrics",
            "Metrics",
            f"<p>{pairs['scored']} images scored; PTB tokens by {html.esc(metrics['tokenizer'])}."
            "</p>",
            html.table(["metric", "value"], metrics["metrics"].items()),
        )
    ]
    if config.report.plots and plots.matplotlib_available():
        per_image = metrics["per_image"]
        names = [n for n in GALLERY_ORDER if any(n in s for s in per_image.values())][:2]
        figures = [
            plots.histogram(
                {name: [s[name] for s in per_image.values() if name in s]},
                f"{name} per image",
                name,
            )
            for name in names
        ]
        figures.append(
            plots.histogram(
                {
                    "predictions": [len(e["prediction"].split()) for e in evaluation.examples],
                    "references": [
                        len(r.split()) for e in evaluation.examples for r in e["references"]
                    ],
                },
                "Caption length",
                "words",
            )
        )
        shown = "".join(html.image(src, "distribution") for src in figures if src)
        sections.append(
            html.section("distributions", "Distributions", f'<div class="plots">{shown}</div>')
        )
    diversity = metrics["diversity"]
    columns = ["images", "captions", "type_token_ratio", "edit_distance_chars"]
    columns.append("edit_distance_words")
    columns.append("semantic_diversity")
    rows = [(scope, *(values.get(c) for c in columns)) for scope, values in diversity.items()]
    sections.append(html.section("diversity", "Diversity", html.table(["scope", *columns], rows)))
    if "hallucination" in metrics:
        scores = metrics["hallucination"]
        names = ["judged", "chair_i", "chair_s", "coverage", "mentions"]
        unsupported = ", ".join(f"{k} {v}" for k, v in scores["unsupported_objects"].items())
        sections.append(
            html.section(
                "hallucination",
                "Hallucination and coverage",
                html.table(["measure", "value"], [(n, scores[n]) for n in names]),
                f"<p>Most frequent unsupported objects: {html.esc(unsupported or 'none')}</p>",
            )
        )
    sections.append(_gallery(evaluation.examples, images, config))
    return sections


def _gallery(examples: list[dict], images: dict[str, bytes], config: EvalConfig) -> str:
    def key(example: dict) -> tuple:
        scores = example["scores"]
        name = next((n for n in GALLERY_ORDER if n in scores), None)
        return (scores.get(name, 0.0) if name else 0.0, example["id"])

    shown = sorted(examples, key=key)[: config.report.gallery_size]
    items = []
    for example in shown:
        src = images.get(example["id"])
        src = thumbnail(src, config.report.thumbnail_side) if src else None
        picture = html.image(src, example["id"]) if src else "<p>(no image)</p>"
        references = "".join(f"<li>{html.esc(r)}</li>" for r in example["references"])
        scores = ", ".join(f"{k} {v:.3f}" for k, v in example["scores"].items())
        items.append(
            f'<div class="example">{picture}<div class="text"><p><b>{html.esc(example["id"])}'
            f'</b></p><h4>prediction</h4><p class="caption">{html.esc(example["prediction"])}'
            f"</p><h4>references</h4><ul>{references}</ul><p>{html.esc(scores)}</p></div></div>"
        )
    intro = f"<p>{len(shown)} of {len(examples)} images, lowest score first.</p>"
    return html.section("gallery", "Gallery", intro, *items)
