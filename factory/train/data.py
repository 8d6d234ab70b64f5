"""Training examples from factory outputs: caption SFT, museum QA SFT, DPO pairs.

Images travel by uri only; the trainer loads the bytes with `factory.io.uris.read_bytes`.
Every example carries `group`, the image it belongs to (its uri): the train/validation
split is by group, so no image is ever on both sides, and QA sampling picks per group.

    split = load_examples(config)              # once: read, clean, split by image
    for epoch in range(epochs):
        batch_source = epoch_examples(split.train, config, epoch)   # QA one_random resamples
"""

from __future__ import annotations

import hashlib
import logging
import string
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from factory import records
from factory.prompts import load_prompt
from factory.train.sources import SourceRows, read_rows

log = logging.getLogger(__name__)

# Training prompts are the standalone templates rendered without the auxiliary block: the
# fine-tuned model sees only the image. (The caption stage's fusion prompt for "detailed"
# talks about tool notes, which a training prompt never has.)
DEFAULT_PROMPTS = {
    "detailed": "caption_detailed",
    "objective": "caption_objective",
    "formal_analysis": "caption_formal_analysis",
}
FINAL = "final_caption"
DRAFT_STYLE = "draft_style"
QA = "qa"
URI = "uri"
PREFERENCE_COLUMNS = ("prompt", "prompt_template", "chosen", "rejected")
QA_FIELDS = {"question", "category"}

# why a row (or one QA pair) gave no example
MISSING_URI = "missing_uri"
BEYOND_MAX = "beyond_max_examples"
SAME_PAIR = "chosen_equals_rejected"


class DataConfig(BaseModel):
    """Where the examples come from, which texts become targets, and how to split them."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["caption", "qa", "preference"] = Field(
        description="caption: image -> caption SFT; qa: museum question -> answer SFT from "
        "the `qa` column; preference: DPO pairs from a `review import` Parquet"
    )
    source: str = Field(
        description="a caption run's output folder or s3:// prefix (reads captions/), a "
        "folder of part-*.parquet shards, or one .parquet / .jsonl file; rows need `uri`"
    )
    styles: list[str] = Field(
        default_factory=lambda: ["detailed"],
        min_length=1,
        description="caption kind: the styles trained, one caption_<style> column each",
    )
    prompts: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_PROMPTS),
        description="caption kind: style -> prompt template name; the prompt is the "
        "template rendered with no auxiliary information",
    )
    use_final_caption: bool = Field(
        True,
        description="caption kind: for the style a row's `draft_style` names, train on its "
        "critic-fixed `final_caption` instead of the first-pass caption (when it has one; "
        "not with text_column)",
    )
    text_column: str | None = Field(
        None,
        description="caption kind: a manifest's plain text column (e.g. 'caption') used "
        "instead of caption_<style>; its rows train the single style in `styles`",
    )
    qa_sampling: Literal["all", "one_random"] = Field(
        "all",
        description="qa kind (MUSEUM-65 ablation): every question of an image each epoch, "
        "or one question per image per epoch, drawn reproducibly from (seed, epoch, image)",
    )
    qa_prompt: str = Field(
        "Question: {question} Answer:",
        description="qa kind: the prompt around one question; fields {question} (required) "
        "and {category}",
    )
    validation_fraction: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="share of images held out; with >= 2 images and a fraction > 0 at least "
        "one image is held out and at least one is kept for training",
    )
    seed: int = Field(0, description="seeds the split by image and the QA one_random draws")
    max_examples: int | None = Field(
        None,
        ge=1,
        description="keep only the first N examples in source order, before the split "
        "(smoke runs); None keeps all",
    )

    @field_validator("qa_prompt")
    @classmethod
    def _qa_prompt_fields(cls, template: str) -> str:
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
        except ValueError as error:
            raise ValueError(f"qa_prompt {template!r} is not a format template: {error}") from None
        if "question" not in fields or not fields <= QA_FIELDS:
            raise ValueError(
                f"qa_prompt {template!r} must contain {{question}} and may contain only "
                f"{sorted(QA_FIELDS)} fields, got {sorted(fields)}"
            )
        return template

    @model_validator(mode="after")
    def _caption_styles(self) -> DataConfig:
        if self.kind != "caption":
            return self
        missing = [style for style in self.styles if style not in self.prompts]
        if missing:
            raise ValueError(f"styles {missing} have no prompt; add them to `prompts`")
        for style in self.styles:
            load_prompt(self.prompts[style])  # an unknown template fails here, not mid-load
        if self.text_column and len(self.styles) != 1:
            raise ValueError(
                f"text_column {self.text_column!r} holds one text per row, so name exactly "
                f"one style, not {self.styles}"
            )
        return self


@dataclass(frozen=True)
class SFTExample:
    image_uri: str
    prompt: str
    target: str
    group: str  # the image, for the split and QA sampling


@dataclass(frozen=True)
class PreferenceExample:
    image_uri: str
    prompt: str
    chosen: str
    rejected: str
    group: str


Example = SFTExample | PreferenceExample
# what each kind's builder returns: examples, rows read, skipped reason -> n, target column -> n
Built = tuple[list[Example], int, Counter[str], Counter[str]]


@dataclass(frozen=True)
class DataStats:
    source: str
    kind: str
    rows: int  # rows read
    examples: int  # examples kept (train + validation)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows or QA pairs
    targets: dict[str, int] = field(default_factory=dict)  # column a target came from -> n
    train_images: int = 0
    validation_images: int = 0
    train_examples: int = 0
    validation_examples: int = 0

    def line(self) -> str:
        skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(self.skipped.items()))
        return (
            f"{self.kind} data from {self.source}: {self.rows} rows -> {self.examples} "
            f"examples ({self.train_examples} train on {self.train_images} images, "
            f"{self.validation_examples} validation on {self.validation_images} images); "
            f"skipped: {skipped or 'none'}"
        )


@dataclass(frozen=True)
class Split:
    train: list[Example]
    validation: list[Example]
    stats: DataStats


def load_examples(config: DataConfig) -> Split:
    """Read the source, turn its rows into examples, and split them by image."""
    builder = _BUILDERS[config.kind]
    examples, rows, skipped, targets = builder(config)
    if config.max_examples is not None and len(examples) > config.max_examples:
        skipped[BEYOND_MAX] = len(examples) - config.max_examples
        examples = examples[: config.max_examples]
    held_out = validation_images(
        (example.group for example in examples), config.validation_fraction, config.seed
    )
    train = [example for example in examples if example.group not in held_out]
    validation = [example for example in examples if example.group in held_out]
    stats = DataStats(
        source=config.source,
        kind=config.kind,
        rows=rows,
        examples=len(examples),
        skipped=dict(skipped),
        targets=dict(targets),
        train_images=len({example.group for example in train}),
        validation_images=len(held_out),
        train_examples=len(train),
        validation_examples=len(validation),
    )
    log.info(stats.line())
    return Split(train=train, validation=validation, stats=stats)


def epoch_examples(examples: list[Example], config: DataConfig, epoch: int) -> list[Example]:
    """The examples one epoch trains on.

    QA with `one_random` keeps one question per image, drawn from (seed, epoch, image):
    the same epoch always gets the same draw, and each epoch (or seed) draws afresh.
    Everything else trains on every example every epoch.
    """
    if config.kind != "qa" or config.qa_sampling == "all":
        return list(examples)
    by_image: dict[str, list[Example]] = {}
    for example in examples:
        by_image.setdefault(example.group, []).append(example)
    # hashed per image rather than one shuffled RNG: an image's draw does not move when
    # other images are added, removed or reordered
    return [
        questions[_hash(config.seed, epoch, image) % len(questions)]
        for image, questions in by_image.items()
    ]


def validation_images(groups: Iterable[str], fraction: float, seed: int) -> frozenset[str]:
    """The images held out: those whose hash of (seed, uri) falls below `fraction`.

    Hashing each image on its own keeps its side stable when the dataset grows. Small sets
    are adjusted so that, with >= 2 images and fraction > 0, both sides have an image.
    """
    images = sorted(set(groups))
    if fraction <= 0 or len(images) < 2:
        return frozenset()
    score = {image: _hash(seed, "split", image) / 2**64 for image in images}
    held_out = {image for image in images if score[image] < fraction}
    if not held_out:
        held_out = {min(images, key=score.__getitem__)}
    if len(held_out) == len(images):
        held_out.remove(max(images, key=score.__getitem__))
    return frozenset(held_out)


def _hash(*parts: object) -> int:
    """A 64-bit hash of `parts` that is the same in every process (unlike hash())."""
    key = "\x1f".join(str(part) for part in parts).encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "big")


def _text(row: dict, column: str) -> str | None:
    """The stripped text in `column`, or None when it is missing, null or blank."""
    value = row.get(column)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"column {column!r} should hold text, got {type(value).__name__}")
    return value.strip() or None


def _no_rows(read: SourceRows, looked_for: list[str], skipped: Counter) -> ValueError:
    reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
    return ValueError(
        f"{read.source}: no usable rows; looked for columns {looked_for}, found "
        f"{list(read.available)}" + (f" (skipped: {reasons})" if reasons else "")
    )


def _caption_examples(config: DataConfig) -> Built:
    final = config.use_final_caption and not config.text_column
    columns = (
        [config.text_column]
        if config.text_column
        else [records.caption_column(s) for s in config.styles]
    )
    read = read_rows(config.source, [URI, *columns, *((FINAL, DRAFT_STYLE) if final else ())])
    finals = final and {FINAL, DRAFT_STYLE} <= set(read.columns)
    looked_for = [URI, *columns] + ([f"{FINAL} (+{DRAFT_STYLE})"] if final else [])
    if URI not in read.columns:
        raise _no_rows(read, looked_for, Counter())
    final_styles = {row.get(DRAFT_STYLE) for row in read.rows} if finals else set()
    for style, column in zip(config.styles, columns, strict=True):
        if column not in read.columns and style not in final_styles:
            raise ValueError(
                f"{read.source}: style {style!r} has no text: no column {column!r}"
                + (f" and no rows with {DRAFT_STYLE}={style!r}" if final else "")
                + f"; found {list(read.available)}"
            )
    prompts = {style: load_prompt(config.prompts[style]).render() for style in config.styles}
    examples: list[Example] = []
    skipped: Counter[str] = Counter()
    targets: Counter[str] = Counter()
    for row in read.rows:
        uri = _text(row, URI)
        if uri is None:
            skipped[MISSING_URI] += 1
            continue
        for style in config.styles:
            column = config.text_column or records.caption_column(style)
            if finals and row.get(DRAFT_STYLE) == style and _text(row, FINAL):
                column = FINAL  # the critic-checked rewrite of this style's draft
            target = _text(row, column)
            if target is None:
                skipped[f"empty_{column}"] += 1
                continue
            targets[column] += 1
            examples.append(SFTExample(uri, prompts[style], target, group=uri))
    if not examples:
        raise _no_rows(read, looked_for, skipped)
    return examples, len(read.rows), skipped, targets


def _qa_examples(config: DataConfig) -> Built:
    read = read_rows(config.source, [URI, QA])
    looked_for = [URI, f"{QA} (list of category/question/answer)"]
    if not {URI, QA} <= set(read.columns):
        raise _no_rows(read, looked_for, Counter())
    examples: list[Example] = []
    skipped: Counter[str] = Counter()
    for row in read.rows:
        uri = _text(row, URI)
        if uri is None:
            skipped[MISSING_URI] += 1
            continue
        pairs = row.get(QA) or []
        if not pairs:
            skipped["empty_qa"] += 1
        for pair in pairs:
            question, answer = _text(pair, "question"), _text(pair, "answer")
            if question is None or answer is None:
                skipped["empty_question" if question is None else "empty_answer"] += 1
                continue
            category = pair.get("category") or ""
            prompt = config.qa_prompt.format(question=question, category=category)
            examples.append(SFTExample(uri, prompt, answer, group=uri))
    if not examples:
        raise _no_rows(read, looked_for, skipped)
    return examples, len(read.rows), skipped, Counter({QA: len(examples)})


def _preference_examples(config: DataConfig) -> Built:
    read = read_rows(config.source, [URI, *PREFERENCE_COLUMNS])
    looked_for = [URI, "prompt (or prompt_template)", "chosen", "rejected"]
    has_prompt = bool({"prompt", "prompt_template"} & set(read.columns))
    if not ({URI, "chosen", "rejected"} <= set(read.columns) and has_prompt):
        raise _no_rows(read, looked_for, Counter())
    rendered: dict[str, str] = {}  # template -> prompt, for pairs files without `prompt`
    examples: list[Example] = []
    skipped: Counter[str] = Counter()
    for row in read.rows:
        uri = _text(row, URI)
        prompt = _text(row, "prompt")
        template = _text(row, "prompt_template")
        if prompt is None and template is not None:
            if template not in rendered:
                rendered[template] = load_prompt(template).render()
            prompt = rendered[template]
        chosen, rejected = _text(row, "chosen"), _text(row, "rejected")
        reason = _pair_problem(uri, prompt, chosen, rejected)
        if reason:
            skipped[reason] += 1
            continue
        examples.append(PreferenceExample(uri, prompt, chosen, rejected, group=uri))
    if not examples:
        raise _no_rows(read, looked_for, skipped)
    return examples, len(read.rows), skipped, Counter({"chosen": len(examples)})


def _pair_problem(
    uri: str | None, prompt: str | None, chosen: str | None, rejected: str | None
) -> str | None:
    """Why a preference row gives no pair, or None when it gives one."""
    if uri is None:
        return MISSING_URI
    if prompt is None:
        return "empty_prompt"
    if chosen is None:
        return "empty_chosen"
    if rejected is None:
        return "empty_rejected"
    if " ".join(chosen.split()) == " ".join(rejected.split()):
        return SAME_PAIR  # nothing to prefer, nothing to learn
    return None


_BUILDERS = {
    "caption": _caption_examples,
    "qa": _qa_examples,
    "preference": _preference_examples,
}
