"""One local Ray for the serving tests, started after the loopback S3 server so replicas
inherit its AWS variables (the tiny-model app loads an adapter from S3).

address="local" always starts a fresh Ray: a plain ray.init() joins whatever cluster
/tmp/ray/ray_current_cluster names, which a `ray start` elsewhere on the machine leaves.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def serve_ray(s3_endpoint):
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()
