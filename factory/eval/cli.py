"""`factory eval`: score predictions against references, or describe a caption run.

    factory eval --predictions P --references R [--images DIR_OR_URI] [--out DIR]
    factory eval --run OUTPUT_URI [--references R --id-column C] [--baseline RUN] [--out DIR]

Prints a table, writes metrics.json and report.html into --out (for --run: the run's own
output unless --out is given). Settings: --config YAML / --set key=value (EvalConfig).
"""

from __future__ import annotations

import argparse
import sys

DEFAULT_OUT = "eval-output"


def add_eval_command(commands) -> None:
    sub = commands.add_parser("eval", help="caption metrics, QA scores, diversity, HTML report")
    source = sub.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", help="Parquet (file or folder) or JSONL by image id")
    source.add_argument("--run", help="a caption run's output folder or s3:// prefix")
    sub.add_argument(
        "--references",
        help="Parquet or JSONL: several captions (or QA answers) per image id; with --run "
        "the run's caption columns (or its qa pairs) are scored against them",
    )
    sub.add_argument(
        "--baseline",
        help="with --run: an earlier run's output; critic score, health flags and caption "
        "length are compared with it (metrics.json against_baseline, a report section)",
    )
    sub.add_argument("--images", help="folder or s3:// prefix of <image id>.<ext> files")
    sub.add_argument("--out", help=f"where metrics.json and report.html go ({DEFAULT_OUT})")
    sub.add_argument("--id-column", default="image_id", help="the key of both tables")
    sub.add_argument("--prediction-column", help="caption column of the predictions")
    sub.add_argument("--reference-column", help="caption column(s) of the references")
    sub.add_argument("--config", help="YAML with EvalConfig fields (see factory/eval/config.py)")
    sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")


def run_eval(args: argparse.Namespace) -> int:
    from factory.config import load_config
    from factory.eval.config import EvalConfig

    config = load_config(args.config, args.overrides, model=EvalConfig)
    if args.run:
        from factory.eval.run_eval import evaluate_run

        return evaluate_run(args, config)
    if args.baseline:
        raise ValueError("--baseline compares caption runs: use it with --run")
    if not args.references:
        raise ValueError("--predictions needs --references (or use --run OUTPUT)")
    from factory.eval.run_eval import evaluate_files

    return evaluate_files(args, config)


def print_table(title: str, values: dict) -> None:
    print(title)
    width = max((len(name) for name in values), default=0)
    for name, value in values.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        print(f"  {name:<{width}}  {shown}")
    sys.stdout.flush()
