"""`factory eval` with references: predictions vs references (captions or museum QA).

Returns the numbers metrics.json holds and the examples the report shows; the CLI prints,
writes and renders them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from factory.eval.captioning import JAVA_METRICS, check_pairs, score_captions_detailed
from factory.eval.diversity import Embed, caption_diversity
from factory.eval.eval_config import EvalConfig
from factory.eval.inputs import caption_predictions, caption_references, is_qa, qa_items
from factory.eval.tokenize import java_available
from factory.eval.vqa import score_vqa


@dataclass
class Evaluation:
    kind: str  # "captions" or "qa"
    metrics: dict  # what metrics.json holds
    examples: list[dict] = field(default_factory=list)  # id, prediction, references, scores
    notes: list[str] = field(default_factory=list)


def resolve_tokenizer(config: EvalConfig) -> str:
    if config.tokenizer == "auto":
        return "ptb-java" if java_available() else "ptb-python"
    return config.tokenizer


def evaluate_tables(
    predictions,
    references,
    config: EvalConfig,
    id_column: str = "image_id",
    prediction_column: str | None = None,
    reference_column: str | None = None,
    images: dict[str, bytes] | None = None,
    embed: Embed | None = None,
) -> Evaluation:
    """Captions when neither table has questions; museum QA when both have them."""
    if is_qa(references) and is_qa(predictions):
        result = score_vqa(qa_items(predictions, id_column), qa_items(references, id_column))
        return Evaluation("qa", {"kind": "qa", **result})
    predicted = caption_predictions(predictions, id_column, prediction_column)
    gold = caption_references(references, id_column, reference_column)
    evaluation = evaluate_captions(predicted, gold, config, images or {}, embed)
    if {"tags", "objects"} & set(predictions.column_names):
        evaluation.metrics["hallucination"] = _hallucination(
            predictions, predicted, id_column, config
        )
    return evaluation


def _hallucination(predictions, predicted: dict[str, str], id_column: str, config) -> dict:
    """CHAIR and coverage of the predictions against the tags/boxes they carry (a run's
    captions/ read as predictions has them)."""
    from factory.eval.hallucination import build_lexicon, expert_objects, hallucination_scores

    lexicon = build_lexicon(config.hallucination)
    experts = {
        str(row[id_column]): expert_objects(
            row.get("tags"), row.get("objects"), lexicon, config.hallucination
        )
        for row in predictions.select(
            [n for n in (id_column, "tags", "objects") if n in predictions.column_names]
        ).to_pylist()
    }
    return hallucination_scores(predicted, experts, lexicon)


def evaluate_captions(
    predicted: dict[str, str],
    gold: dict[str, list[str]],
    config: EvalConfig,
    images: dict[str, bytes],
    embed: Embed | None = None,
) -> Evaluation:
    notes = []
    tokenizer = resolve_tokenizer(config)
    metrics = list(config.metrics)
    if tokenizer == "ptb-python" and JAVA_METRICS & set(metrics):
        metrics = [name for name in metrics if name not in JAVA_METRICS]
        notes.append(f"no Java: left out {sorted(JAVA_METRICS)}; PTB tokens from the Python port")
    try:
        scores = score_captions_detailed(predicted, gold, metrics, tokenizer, config.rouge_stemmer)
    except (OSError, RuntimeError) as error:
        if config.tokenizer != "auto" or tokenizer != "ptb-java":
            raise
        # auto picked Java because one is on PATH, but it could not run (a read-only
        # pycocoevalcap folder, a broken JVM): score what needs no Java, and say so
        tokenizer = "ptb-python"
        metrics = [name for name in metrics if name not in JAVA_METRICS]
        notes.append(f"Java tokenizer failed ({error}); Python PTB port used, METEOR left out")
        scores = score_captions_detailed(predicted, gold, metrics, tokenizer, config.rouge_stemmer)
    pairs = check_pairs(predicted, gold)
    if pairs["without_reference"] or pairs["without_prediction"]:
        notes.append(
            f"{pairs['without_reference']} predictions have no reference and "
            f"{pairs['without_prediction']} referenced images no prediction: not scored"
        )
    per_image = scores.per_image
    metrics_json = {
        "kind": "captions",
        "pairs": pairs,
        "tokenizer": scores.tokenizer,
        "metrics": scores.corpus,
        "diversity": {
            "references_per_image": caption_diversity(gold, embed),
            "predictions_across_images": caption_diversity(
                {"all": list(predicted.values())[: config.diversity_sample]}, embed
            ),
        },
    }
    if config.clip_model and images:
        from factory.eval.clipscore import clip_scores

        clip = clip_scores(predicted, gold, images, config.clip_model, config.clip_prefix)
        for key, values in clip.pop("per_image", {}).items():
            per_image.setdefault(key, {}).update(values)
        metrics_json["clip"] = {"model": config.clip_model, **clip}
        metrics_json["metrics"].update(
            {name: clip[name] for name in ("CLIPScore", "RefCLIPScore") if name in clip}
        )
    metrics_json["per_image"] = per_image
    metrics_json["notes"] = notes
    examples = [
        {"id": key, "prediction": predicted[key], "references": gold[key], "scores": per_image[key]}
        for key in sorted(per_image)
    ]
    return Evaluation("captions", metrics_json, examples, notes)
