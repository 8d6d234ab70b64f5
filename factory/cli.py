"""`factory caption|demo|config|review|train|serve`: the command line, a typed function each."""

from __future__ import annotations

import argparse
import sys
from importlib import resources

import yaml
from pydantic import ValidationError

from factory.config import CaptionRunConfig, load_config
from factory.eval.cli import add_eval_command, run_eval
from factory.review.cli import add_review_commands, run_review

DEMO_OUTPUT = "factory-demo-output"


def samples_dir() -> str:
    """The sample images shipped inside the package (public-domain artworks)."""
    return str(resources.files("factory").joinpath("samples"))


def caption(input: str, output: str, config: str | None = None, overrides: list[str] = ()) -> int:
    from factory.runner import run_caption, summary_text

    run_config = load_config(config, [*overrides, f"input={input}", f"output={output}"])
    result = run_caption(run_config)
    print(summary_text(result))
    return 0


# The demo's captioner has random weights, whose greedy output loops: health flags the
# loops on every caption, and rejecting on them would leave nothing to look at.
DEMO_OVERRIDES = ["health.reject_on=[]"]


def loop_preset() -> str:
    """The whole caption loop on the offline tiny models (jobs/configs/caption_ultra.yaml)."""
    return str(resources.files("factory").joinpath("presets", "caption_ultra.yaml"))


def demo(output: str = DEMO_OUTPUT, overrides: list[str] = (), loop: bool = False) -> int:
    print(f"demo: captioning the shipped samples in {samples_dir()} into {output}")
    print("demo: health flags are recorded, not rejected (health.reject_on=[])")
    if loop:
        print("demo: the whole loop: captions, QA, expansion, facts, critic, rewrite")
    config = loop_preset() if loop else None
    return caption(samples_dir(), output, config, [*DEMO_OVERRIDES, *overrides])


def train(config: str | None, overrides: list[str] = ()) -> int:
    from factory.train.config import TrainConfig
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


def serve(config: str | None, overrides: list[str] = ()) -> int:
    # imported here: the serving stack (Ray Serve, FastAPI) loads only for this command
    from factory.serve.app import run_locally
    from factory.serve.config import ServeConfig

    run_locally(load_config(config, overrides, model=ServeConfig))
    return 0


def show_config(config: str | None = None, overrides: list[str] = ()) -> int:
    resolved = load_config(config, overrides)
    print(yaml.safe_dump(resolved.model_dump(mode="json"), sort_keys=False))
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="factory", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    def add_overrides(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config field, e.g. --set validation.min_side=64",
        )

    run = commands.add_parser("caption", help="caption a folder, s3:// prefix or manifest")
    run.add_argument(
        "--input", required=True, help=CaptionRunConfig.model_fields["input"].description
    )
    run.add_argument(
        "--output", required=True, help=CaptionRunConfig.model_fields["output"].description
    )
    run.add_argument("--config", help="YAML config file (see `factory config`)")
    add_overrides(run)

    sample = commands.add_parser("demo", help="caption the shipped sample images offline")
    sample.add_argument("--output", default=DEMO_OUTPUT, help="where to write the demo run")
    sample.add_argument(
        "--loop",
        action="store_true",
        help="run the whole caption loop (QA, expansion, facts, critic, rewrite) on the "
        "tiny models, as jobs/configs/caption_ultra.yaml does",
    )
    add_overrides(sample)

    show = commands.add_parser("config", help="print the resolved config as YAML")
    show.add_argument("--config", help="YAML config file to resolve")
    add_overrides(show)
    add_review_commands(commands)
    add_eval_command(commands)

    fit = commands.add_parser("train", help="fine-tune a captioner with Ray Train")
    fit.add_argument("--config", required=True, help="YAML training config (jobs/configs/train_*)")
    add_overrides(fit)

    api = commands.add_parser("serve", help="serve the models over HTTP with Ray Serve")
    api.add_argument("--config", help="YAML serving config (jobs/configs/serve_*)")
    add_overrides(api)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "review":
            return run_review(args)
        if args.command == "eval":
            return run_eval(args)
        if args.command == "caption":
            return caption(args.input, args.output, args.config, args.overrides)
        if args.command == "demo":
            return demo(args.output, args.overrides, loop=args.loop)
        if args.command == "train":
            return train(args.config, args.overrides)
        if args.command == "serve":
            return serve(args.config, args.overrides)
        return show_config(args.config, args.overrides)
    except (ValidationError, ValueError, FileNotFoundError) as error:
        # a config's validation error carries its one-line explanation as a note
        notes = getattr(error, "__notes__", None)
        print(f"factory {args.command}: {notes[-1] if notes else error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        print(f"factory {args.command}: {stop or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
