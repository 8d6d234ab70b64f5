"""How long the automatic run report takes to build, and whether Chromium renders it cleanly.

    .venv/bin/python -m benchmarks.report_render [--rows 200 2000 20000] [--gallery 12]

Writes a synthetic caption run per size (one captions/ shard holding a small PNG per row,
three caption styles, an expanded and a final caption, four fact checks, QA pairs, OCR
lines, health flags, run.json), times `write_run_report` on it (what every caption run
does after its last shard: no JVM, no embedding model), then loads the report in the
system Chromium through playwright and counts console errors and undecoded images.
Exits 0 whatever it finds.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

WORDS = ["horse", "field", "sky", "boat", "wave", "tree", "woman", "man", "church"]
WORDS += ["bridge", "river", "moon", "star", "red", "blue"]
VERDICTS = ["consistent", "consistent", "inconsistent", "unverifiable"]


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (seed * 37 % 256, seed * 91 % 256, seed * 13 % 256)).save(
        buffer, format="PNG"
    )
    return buffer.getvalue()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def write_run(output: Path, rows: int) -> None:
    rng = random.Random(rows)
    records = []
    for index in range(rows):
        facts = [_text(rng, 5) for _ in range(4)]
        verdicts = [rng.choice(VERDICTS) for _ in facts]
        records.append(
            {
                "uri": f"s3://bucket/images/{index:06d}.jpg",
                "input_index": index,
                "image": _png(index),
                "category": rng.choice(["painting", "print", "sculpture", "manuscript page"]),
                "caption_detailed": _text(rng, rng.randint(30, 90)),
                "caption_objective": _text(rng, rng.randint(10, 40)),
                "caption_formal_analysis": _text(rng, rng.randint(60, 160)),
                "expanded_caption": _text(rng, rng.randint(80, 200)),
                "final_caption": _text(rng, rng.randint(60, 150)),
                "fact_checks": [
                    {"fact": f, "verdict": v, "reason": "seen", "correction": None}
                    for f, v in zip(facts, verdicts, strict=True)
                ],
                "critic_score": verdicts.count("consistent") / len(verdicts),
                "qa": [{"category": "subject", "question": "What?", "answer": "a horse"}],
                "ocr": [{"text": "AD 1650", "score": 0.9, "box": [0.1, 0.1, 0.2, 0.2]}]
                * rng.randint(0, 3),
                "health_flags": [{"field": "caption_detailed", "rule": "repetition", "detail": ""}]
                if index % 7 == 0
                else [],
            }
        )
    (output / "captions").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(records), output / "captions" / "part-0.parquet")
    counts = {"inputs": rows, "accepted": rows, "rejected": 0, "duplicates": 0}
    run = {"run_id": f"bench-{rows}", "counts": counts, "stage_seconds": {"caption": 1.0}}
    (output / "run.json").write_text(json.dumps(run))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[200, 2000, 20000])
    parser.add_argument("--gallery", type=int, default=12)
    args = parser.parse_args()
    from factory.eval.eval_config import AUTOMATIC_REPORT
    from factory.eval.run_report import write_run_report
    from tests.eval.browser import chromium_path, render

    config = AUTOMATIC_REPORT.model_copy(deep=True)
    config.report.gallery_size = args.gallery
    browser = chromium_path()
    print("rows | build s | report KiB | chromium load+screenshot s | problems | broken images")
    for rows in args.rows:
        root = Path(tempfile.mkdtemp(prefix="report-bench-"))
        try:
            write_run(root / "out", rows)
            started = time.perf_counter()
            target, _ = write_run_report(str(root / "out"), config)
            built = time.perf_counter() - started
            size = Path(target).stat().st_size / 1024
            if browser:
                started = time.perf_counter()
                shown = render(Path(target), browser)
                seconds = f"{time.perf_counter() - started:.2f}"
                problems, broken = len(shown.problems), len(shown.broken_images)
            else:
                seconds, problems, broken = "no chromium", "-", "-"
            print(f"{rows} | {built:.2f} | {size:.0f} | {seconds} | {problems} | {broken}")
        finally:
            shutil.rmtree(root)


if __name__ == "__main__":
    main()
