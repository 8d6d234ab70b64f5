"""Fine-tune a captioner as a Ray job.

    ray job submit --working-dir . -- \
        python -m jobs.train --config jobs/configs/train_tiny_cpu.yaml \
        --set output=s3://bucket/models/tiny-v1/

`-m` puts the working directory (the repo root) on the path, so `factory` imports without
being installed. Inside a submitted job Ray Train joins the job's cluster.
"""

import sys

from factory.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
