"""Failure drills on one machine: S3 failing part of the time, a node lost mid-run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import boto3
import pytest

from factory.cli import samples_dir
from tests.flaky_s3_proxy import FlakyS3Proxy
from tests.imagegen import png

SAMPLES = sorted(n for n in os.listdir(samples_dir()) if not n.endswith(".tsv"))


def factory_cli(args: list[str], env: dict[str, str], timeout: int = 240) -> str:
    """`factory ...` in its own process: it starts its own Ray, whose workers see `env`."""
    done = subprocess.run(
        [sys.executable, "-m", "factory.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow
def test_transient_s3_errors_are_retried_and_nothing_is_lost(s3_endpoint, s3_bucket):
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    for name in SAMPLES:
        s3.upload_file(os.path.join(samples_dir(), name), s3_bucket, f"in/{name}")
    s3.put_object(Bucket=s3_bucket, Key="in/broken.jpg", Body=b"\xff\xd8 not really a jpeg")
    proxy = FlakyS3Proxy(s3_endpoint, every=4)  # a quarter of all requests fail
    try:
        factory_cli(
            [
                "caption",
                "--input",
                f"s3://{s3_bucket}/in/",
                "--output",
                f"s3://{s3_bucket}/out/",
                *("--set", "caption=null", "--set", "health=null", "--set", "ocr=null"),
                *("--set", "ray.num_cpus=2"),
            ],
            env={"AWS_ENDPOINT_URL": proxy.url},
        )
    finally:
        proxy.close()
    assert any(r.startswith("PUT ") for r in proxy.failed)  # writes failed too
    assert any(r.startswith(("GET ", "HEAD ")) for r in proxy.failed)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="out/")["Contents"]]
    run = json.loads(s3.get_object(Bucket=s3_bucket, Key="out/run.json")["Body"].read())
    counts = run["counts"]
    assert counts["inputs"] == len(SAMPLES) + 1
    assert (counts["accepted"], counts["rejected"]) == (len(SAMPLES), 1)
    # (pyarrow marks folders with empty "name/" objects)
    shards = [k for k in keys if k.startswith(("out/captions/", "out/rejected/"))]
    shards = [k for k in shards if not k.endswith("/")]
    # no partial or temporary objects: committed shards only
    assert shards and all(k.rsplit("/", 1)[1].startswith("part-") for k in shards)
    assert all(k.endswith(".parquet") for k in shards)
    import pyarrow.parquet as pq
    from pyarrow.fs import S3FileSystem

    filesystem = S3FileSystem(endpoint_override=s3_endpoint, region="us-east-1")
    rows = [pq.read_table(f"{s3_bucket}/{k}", filesystem=filesystem).num_rows for k in shards]
    assert sum(rows) == len(SAMPLES) + 1  # every input exactly once


@pytest.mark.slow
def test_a_worker_node_lost_mid_run_loses_no_input(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    count = 96
    for seed in range(count):  # random shapes on gradients: no two alike, dedup keeps all
        (inputs / f"art{seed:03d}.png").write_bytes(png(96, 72, seed=seed))
    report_path = tmp_path / "report.json"
    drill = ["tests.node_loss_drill", str(inputs), str(tmp_path / "out"), str(report_path)]
    done = subprocess.run(
        [sys.executable, "-m", *drill],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(report_path.read_text())  # not stdout: Ray prints there too
    assert report["lost_mid_run"]
    counts = report["counts"]
    assert counts["inputs"] == count == counts["accepted"]
    import pyarrow.parquet as pq

    written = pq.read_table(tmp_path / "out" / "captions").column("uri").to_pylist()
    assert sorted(written) == sorted(set(written)) and len(written) == count  # once each
