"""Serve the models over HTTP with Ray Serve, as a Ray job (blocks until stopped).

    ray job submit --working-dir . -- \
        python -m jobs.serve --config jobs/configs/serve_gpu_vllm.yaml

Locally, the same as `factory serve --config jobs/configs/serve_tiny_cpu.yaml`. For a
long-lived cluster deployment use the Serve config file instead:
`serve deploy jobs/configs/serve_deploy_gpu.yaml` (or `serve run` it to try it).
"""

import sys

from factory.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
