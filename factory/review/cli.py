"""`factory review export|import`: the review queue's commands for factory.cli.

Imports stay light here (the parser is built for every factory command); the export and
import modules load only when a review command runs.
"""

from __future__ import annotations

import argparse
import sys

from factory.review import DEFAULT_COUNT
from factory.review.items import REVIEW_FILES


def add_review_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `review export` and `review import` on factory's command subparsers."""
    review = subparsers.add_parser(
        "review",
        help="export low-scoring captions for people to correct; import their corrections",
    )
    actions = review.add_subparsers(dest="review_command", required=True)

    export = actions.add_parser(
        "export", help="the N lowest critic scores, with images and verdicts, to a folder"
    )
    export.add_argument("--run", required=True, help="a caption run's --output (local or s3://)")
    export.add_argument("--to", required=True, help="the review folder to write (local or s3://)")
    export.add_argument(
        "--n", type=int, default=DEFAULT_COUNT, help=f"how many captions (default {DEFAULT_COUNT})"
    )
    export.add_argument(
        "--format", choices=sorted(REVIEW_FILES), default="jsonl", help="review file format"
    )
    export.add_argument(
        "--max-score", type=float, help="only captions whose critic score is at most this"
    )
    export.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier export in --to (its reviewer's edits are lost)",
    )

    read = actions.add_parser("import", help="corrected captions -> preference pairs (Parquet)")
    read.add_argument("--review", required=True, help="the review folder (or its review file)")
    read.add_argument("--out", required=True, help="the Parquet file of pairs to write")


def run_review(args: argparse.Namespace) -> int:
    """Run the parsed review command, print a one-line summary; 2 on a user error."""
    try:
        if args.review_command == "export":
            from factory.review.export import export_review

            summary = export_review(
                args.run, args.to, args.n, args.format, args.max_score, args.overwrite
            )
            print(summary.line())
            for uri in summary.missing_images:
                print(f"  missing source image: {uri}", file=sys.stderr)
            return 0
        from factory.review.importer import import_review

        print(import_review(args.review, args.out).line())
        return 0
    except (ValueError, FileNotFoundError) as error:  # ReviewError is a ValueError
        print(f"factory review {args.review_command}: {error}", file=sys.stderr)
        return 2
