"""What training cannot run, refused in one line each before any worker starts.

Without these, a local Ray waits forever for a resource no node has, a missing source or
a one-image run fails (or writes NaN) only after the workers started, behind pages of
retried tracebacks.
"""

from __future__ import annotations

import os

from factory.train.data import Split, load_examples
from factory.train.train_config import TrainConfig


class TrainingRefused(ValueError):
    """The run cannot work as configured; the message says why and what to change."""


def check_data(config: TrainConfig) -> Split:
    """The data split, once the source exists and gives a train and validation split."""
    try:
        split = load_examples(config.data)
    except FileNotFoundError as error:
        raise TrainingRefused(f"data.source: {error}") from None
    check_split(config, split)
    check_prompt_lengths(config, split)
    return split


def fixed_size_cluster() -> bool:
    """A local Ray started by this process cannot grow; a cluster named by RAY_ADDRESS can."""
    return not os.environ.get("RAY_ADDRESS")


def check_resources(config: TrainConfig, cluster: dict[str, float]) -> None:
    scaling = config.scaling
    per_worker = {"CPU": scaling.cpus_per_worker, **scaling.custom_resources_per_worker}
    if scaling.use_gpu:
        per_worker["GPU"] = 1.0
    for name, amount in per_worker.items():
        needed = amount * scaling.num_workers
        have = cluster.get(name, 0.0)
        if needed > have:
            raise TrainingRefused(
                f"{scaling.num_workers} worker(s) need {needed:g} {name} in all and this Ray "
                f"has {have:g} (it cannot grow): lower scaling.num_workers or the per-worker "
                f"request, or run on a cluster that has {name} (RAY_ADDRESS=...)"
            )


def check_split(config: TrainConfig, split: Split) -> None:
    stats = split.stats
    if not split.train:
        raise TrainingRefused(f"nothing to train on: {stats.line()}")
    if config.data.validation_fraction > 0 and not split.validation:
        raise TrainingRefused(
            f"too few images for a validation split: {stats.train_images} image(s) after "
            f"skipping ({stats.line()}); the best checkpoint is chosen by validation loss, "
            "which needs at least 2 images. Add data, or set data.validation_fraction=0 to "
            "train without validation"
        )


def check_prompt_lengths(config: TrainConfig, split: Split, longest: int = 8) -> None:
    """The longest prompts, encoded as training encodes them, leave room for a target.

    A prompt is never cut (that would drop image tokens), so one that fills max_length
    fails every batch it lands in; found here, it is one line instead of a worker crash.
    """
    from PIL import Image
    from transformers import AutoProcessor

    from factory.models.weights import resolve_model_path
    from factory.train.collate import collate_sft

    examples = [*split.train, *split.validation]
    prompts = sorted({example.prompt for example in examples}, key=len, reverse=True)
    directory = resolve_model_path(config.model.model, config.model.cache_dir)
    processor = AutoProcessor.from_pretrained(directory)
    image = Image.new("RGB", (config.model.max_image_side,) * 2)
    model = config.model
    for prompt in prompts[:longest]:
        try:
            collate_sft(
                processor, model.family, [(image, prompt, "x")], model.max_length, model.task
            )
        except ValueError as error:
            raise TrainingRefused(
                f"model.max_length: {error} (prompt starting {prompt[:60]!r})"
            ) from None
