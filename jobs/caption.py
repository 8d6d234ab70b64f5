"""Caption a collection as a Ray job.

    ray job submit --working-dir . -- \
        python jobs/caption.py --config jobs/configs/caption_default.yaml \
        --input s3://bucket/collection/ --output s3://bucket/runs/collection-v1/

Inside a submitted job `ray.init()` joins the job's cluster, so no address is needed.
"""

import sys

from factory.cli import main

if __name__ == "__main__":
    sys.exit(main(["caption", *sys.argv[1:]]))
