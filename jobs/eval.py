"""Evaluate captions or a caption run as a Ray job (the work runs on the head node).

    ray job submit --working-dir . -- \
        python -m jobs.eval --predictions s3://bucket/eval/predictions.parquet \
        --references s3://bucket/eval/references.parquet --out s3://bucket/eval/v1/

    ray job submit --working-dir . -- python -m jobs.eval --run s3://bucket/runs/v1/

`-m` puts the working directory (the repo root) on the path, so `factory` imports without
being installed. METEOR and the exact COCO tokenisation need a `java` on the node's PATH;
without one the job scores the other metrics and says what it left out.
"""

import sys

from factory.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
