"""Caption a collection as a Ray job.

    ray job submit --working-dir . -- \
        python -m jobs.caption --config jobs/configs/caption_default.yaml \
        --input s3://bucket/collection/ --output s3://bucket/runs/collection-v1/

`-m` puts the working directory (the repo root) on the path, so `factory` imports without
being installed. Inside a submitted job `ray.init()` joins the job's cluster.
"""

import sys

from factory.cli import main

if __name__ == "__main__":
    sys.exit(main(["caption", *sys.argv[1:]]))
