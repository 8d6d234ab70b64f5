"""`factory caption|demo|config|review|eval|train|serve`: the command line.

Every command is a typed function below; cli_parser.py builds the one parser from their
signatures. Heavy modules load inside the command that needs them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib import resources
from typing import Annotated

import yaml
from pydantic import ValidationError

from factory.cli_parser import Arg, build_parser, parse
from factory.config_loading import load_config
from factory.review import DEFAULT_COUNT
from factory.review.items import REVIEW_FILES
from factory.run_config import CaptionRunConfig, load_run_config

DEMO_OUTPUT = "factory-demo-output"
Overrides = Annotated[
    Sequence[str],
    Arg("override a config field, e.g. --set validation.min_side=64", "--set", "KEY=VALUE"),
]
ConfigFile = Annotated[str | None, Arg("YAML config file (see `factory config`)")]


def samples_dir() -> str:
    """The sample images shipped inside the package (public-domain artworks)."""
    return str(resources.files("factory").joinpath("samples"))


def caption(
    input: Annotated[str, Arg(CaptionRunConfig.model_fields["input"].description or "")],
    output: Annotated[str, Arg(CaptionRunConfig.model_fields["output"].description or "")],
    config: ConfigFile = None,
    overrides: Overrides = (),
) -> int:
    """Caption a folder, s3:// prefix or manifest."""
    from factory.runner import run_caption, summary_text

    run_config = load_run_config(config, [*overrides, f"input={input}", f"output={output}"])
    result = run_caption(run_config)
    print(summary_text(result))
    return 0


# The demo's captioner has random weights, whose greedy output loops: health flags the
# loops on every caption, and rejecting on them would leave nothing to look at.
DEMO_OVERRIDES = ["health.reject_on=[]"]


def loop_preset() -> str:
    """The whole caption loop on the offline tiny models (jobs/configs/caption_ultra.yaml)."""
    return str(resources.files("factory").joinpath("presets", "caption_ultra.yaml"))


def demo(
    output: Annotated[str, Arg("where to write the demo run")] = DEMO_OUTPUT,
    loop: Annotated[
        bool,
        Arg(
            "run the whole caption loop (QA, expansion, facts, critic, rewrite) on the tiny "
            "models, as jobs/configs/caption_ultra.yaml does"
        ),
    ] = False,
    overrides: Overrides = (),
) -> int:
    """Caption the shipped sample images offline."""
    print(f"demo: captioning the shipped samples in {samples_dir()} into {output}")
    print("demo: health flags are recorded, not rejected (health.reject_on=[])")
    if loop:
        print("demo: the whole loop: captions, QA, expansion, facts, critic, rewrite")
    config = loop_preset() if loop else None
    return caption(samples_dir(), output, config, [*DEMO_OVERRIDES, *overrides])


def train(
    config: Annotated[str, Arg("YAML training config (jobs/configs/train_*)")],
    overrides: Overrides = (),
) -> int:
    """Fine-tune a captioner with Ray Train."""
    from factory.train.train_config import TrainConfig
    from factory.train.trainer import run_training

    result = run_training(load_config(config, overrides, model=TrainConfig))
    print(f"training -> {result.output}: best validation loss {result.best_val_loss:.4f}")
    for epoch in result.epochs:
        print(
            f"  epoch {epoch['epoch']}: train loss {epoch['train_loss']:.4f}, "
            f"val loss {epoch['val_loss']:.4f}, {epoch['samples_per_s']:.1f} samples/s"
        )
    print(f"  wall time {result.wall_seconds:.1f}s")
    return 0


def serve(
    config: Annotated[str | None, Arg("YAML serving config (jobs/configs/serve_*)")] = None,
    overrides: Overrides = (),
) -> int:
    """Serve the models over HTTP with Ray Serve."""
    # imported here: the serving stack (Ray Serve, FastAPI) loads only for this command
    from factory.serve.app_builder import run_locally
    from factory.serve.serve_config import ServeConfig

    run_locally(load_config(config, overrides, model=ServeConfig))
    return 0


def show_config(
    config: Annotated[str | None, Arg("YAML config file to resolve")] = None,
    overrides: Overrides = (),
) -> int:
    """Print the resolved config as YAML."""
    resolved = load_run_config(config, overrides)
    print(yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False))
    return 0


def review_export(
    run: Annotated[str, Arg("a caption run's --output (local or s3://)")],
    to: Annotated[str, Arg("the review folder to write (local or s3://)")],
    n: Annotated[int, Arg(f"how many captions (default {DEFAULT_COUNT})")] = DEFAULT_COUNT,
    format: Annotated[str, Arg("review file format", choices=tuple(sorted(REVIEW_FILES)))] = (
        "jsonl"
    ),
    max_score: Annotated[
        float | None, Arg("only captions whose critic score is at most this")
    ] = None,
    overwrite: Annotated[
        bool, Arg("replace an earlier export in --to (its reviewer's edits are lost)")
    ] = False,
) -> int:
    """The N lowest critic scores, with images and verdicts, to a folder."""
    from factory.review.export import export_review

    summary = export_review(run, to, n, format, max_score, overwrite)
    print(summary.line())
    for uri in summary.missing_images:
        print(f"  missing source image: {uri}", file=sys.stderr)
    return 0


def review_import(
    review: Annotated[str, Arg("the review folder (or its review file)")],
    out: Annotated[str, Arg("the Parquet file of pairs to write")],
) -> int:
    """Corrected captions -> preference pairs (Parquet)."""
    from factory.review.importer import import_review

    print(import_review(review, out).line())
    return 0


def evaluate(
    predictions: Annotated[
        str | None, Arg("Parquet (file or folder) or JSONL by image id; or give --run")
    ] = None,
    run: Annotated[str | None, Arg("a caption run's output folder or s3:// prefix")] = None,
    references: Annotated[
        str | None,
        Arg(
            "Parquet or JSONL: several captions (or QA answers) per image id; with --run the "
            "run's caption columns (or its qa pairs) are scored against them"
        ),
    ] = None,
    baseline: Annotated[
        str | None,
        Arg(
            "with --run: an earlier run's output; critic score, health flags and caption "
            "length are compared with it (metrics.json against_baseline, a report section)"
        ),
    ] = None,
    images: Annotated[str | None, Arg("folder or s3:// prefix of <image id>.<ext> files")] = None,
    out: Annotated[
        str | None,
        Arg("where metrics.json and report.html go (eval-output; with --run the run's own)"),
    ] = None,
    id_column: Annotated[str, Arg("the key of both tables")] = "image_id",
    prediction_column: Annotated[str | None, Arg("caption column of the predictions")] = None,
    reference_column: Annotated[str | None, Arg("caption column(s) of the references")] = None,
    config: Annotated[
        str | None, Arg("YAML with EvalConfig fields (see factory/eval/eval_config.py)")
    ] = None,
    overrides: Overrides = (),
) -> int:
    """Caption metrics, QA scores, diversity, HTML report."""
    from factory.eval.eval_command import DEFAULT_OUT, evaluate_files, evaluate_run
    from factory.eval.eval_config import EvalConfig

    if (predictions is None) == (run is None):
        raise ValueError("give one of --predictions or --run")
    settings = load_config(config, overrides, model=EvalConfig)
    if run:
        return evaluate_run(run, settings, references, baseline, id_column, reference_column, out)
    if baseline:
        raise ValueError("--baseline compares caption runs: use it with --run")
    if not references:
        raise ValueError("--predictions needs --references (or use --run OUTPUT)")
    return evaluate_files(
        predictions,
        references,
        settings,
        id_column,
        prediction_column,
        reference_column,
        images,
        out or DEFAULT_OUT,
    )


COMMANDS = {
    "caption": caption,
    "demo": demo,
    "config": show_config,
    "review export": review_export,
    "review import": review_import,
    "eval": evaluate,
    "train": train,
    "serve": serve,
}
GROUPS = {"review": "export low-scoring captions for people to correct; import their corrections"}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser("factory", __doc__.split("\n")[0], COMMANDS, GROUPS)
    name, command, arguments = parse(parser, argv)
    try:
        return command(**arguments)
    except (ValidationError, ValueError, FileNotFoundError) as error:
        # a config's validation error carries its one-line explanation as a note
        notes = getattr(error, "__notes__", None)
        print(f"factory {name}: {notes[-1] if notes else error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"factory {name}: {stop or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
