"""Resolving model weights: local passthrough, s3:// fetched once per node, builtin models."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from factory.models.demo.chat_models import build_tiny_llava
from factory.models.weights import (
    build_once,
    cache_name,
    resolve_model_path,
    weights_revision,
)

REPO_ROOT = Path(__file__).resolve().parents[2]

# Each child imports first, says it is ready, then waits for "go", so all of them call
# resolve_model_path at the same moment rather than one after another.
CONCURRENT_CHILD = """
import pathlib, sys, time
from factory.models.weights import resolve_model_path
ready, go, uri, cache_dir = sys.argv[1:]
pathlib.Path(ready).touch()
while not pathlib.Path(go).exists():
    time.sleep(0.005)
print(resolve_model_path(uri, cache_dir))
"""


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> str:
    return build_tiny_llava(str(tmp_path_factory.mktemp("tiny") / "model"))


def _files(root: str | Path) -> dict[str, bytes]:
    root = Path(root)
    return {
        path.relative_to(root).as_posix(): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _upload(model_dir: str, bucket: str, prefix: str) -> str:
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    for name, data in _files(model_dir).items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=data)
    return f"s3://{bucket}/{prefix}"


def _empty_bucket(bucket: str) -> None:
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        s3.delete_object(Bucket=bucket, Key=item["Key"])


def _visible_entries(cache_dir: Path) -> list[str]:
    """Cache entries other than lock files (hidden names are locks and partial downloads)."""
    return sorted(entry.name for entry in cache_dir.iterdir() if not entry.name.endswith(".lock"))


def test_local_directory_is_returned_as_is(tiny_dir):
    assert resolve_model_path(tiny_dir) == tiny_dir


def test_missing_local_directory_names_the_path(tmp_path):
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(FileNotFoundError, match=missing):
        resolve_model_path(missing)


def test_unknown_scheme_is_rejected():
    with pytest.raises(ValueError, match="gs://"):
        resolve_model_path("gs://bucket/model")


def test_s3_prefix_is_copied_once(tiny_dir, s3_bucket, tmp_path):
    uri = _upload(tiny_dir, s3_bucket, "models/tiny")
    cache_dir = tmp_path / "cache"
    local = resolve_model_path(uri, str(cache_dir))
    assert Path(local).parent == cache_dir
    assert _files(local) == _files(tiny_dir)
    assert _visible_entries(cache_dir) == [Path(local).name]

    _empty_bucket(s3_bucket)  # a second resolve must not need S3 at all
    assert resolve_model_path(uri, str(cache_dir)) == local
    assert resolve_model_path(uri + "/", str(cache_dir)) == local
    assert _files(local) == _files(tiny_dir)


def test_distinct_prefixes_get_distinct_caches(tiny_dir, s3_bucket, tmp_path):
    first = _upload(tiny_dir, s3_bucket, "a/model")
    second = _upload(tiny_dir, s3_bucket, "b/model")
    assert cache_name(first) != cache_name(second)
    cache_dir = str(tmp_path / "cache")
    assert resolve_model_path(first, cache_dir) != resolve_model_path(second, cache_dir)


def test_empty_s3_prefix_fails_and_caches_nothing(s3_bucket, tmp_path):
    cache_dir = tmp_path / "cache"
    with pytest.raises(FileNotFoundError, match="nothing-here"):
        resolve_model_path(f"s3://{s3_bucket}/nothing-here", str(cache_dir))
    assert _visible_entries(cache_dir) == []
    assert not any(".partial-" in entry.name for entry in cache_dir.iterdir())


def test_partial_download_left_by_a_dead_process_is_cleaned(tiny_dir, s3_bucket, tmp_path):
    uri = _upload(tiny_dir, s3_bucket, "models/tiny")
    cache_dir = tmp_path / "cache"
    leftover = cache_dir / f".{cache_name(uri)}.partial-dead"
    leftover.mkdir(parents=True)
    (leftover / "config.json").write_text("{")
    local = resolve_model_path(uri, str(cache_dir))
    assert not leftover.exists()
    assert _files(local) == _files(tiny_dir)


def test_concurrent_resolves_share_one_download(tiny_dir, s3_bucket, tmp_path):
    """Several processes at once: each gets the same complete copy.

    Without the lock, two downloads would race and the loser's rename onto the finished
    directory would fail, so a clean exit from every child is the evidence of one download.
    """
    uri = _upload(tiny_dir, s3_bucket, "models/tiny")
    cache_dir = tmp_path / "cache"
    go = tmp_path / "go"
    ready = [tmp_path / f"ready-{index}" for index in range(4)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CONCURRENT_CHILD, str(flag), str(go), uri, str(cache_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for flag in ready
    ]
    deadline = time.monotonic() + 60
    while not all(flag.exists() for flag in ready) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outputs = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0] * len(children), outputs
    paths = {stdout.strip() for stdout, _ in outputs}
    assert len(paths) == 1
    local = paths.pop()
    assert _visible_entries(cache_dir) == [Path(local).name]
    assert not any(".partial-" in entry.name for entry in cache_dir.iterdir())
    assert _files(local) == _files(tiny_dir)


def test_builtin_tiny_llava_is_built_into_the_cache(tmp_path):
    local = resolve_model_path("builtin://tiny-llava", str(tmp_path))
    assert Path(local).is_relative_to(tmp_path)
    assert (Path(local) / "model.safetensors").is_file()
    assert resolve_model_path("builtin://tiny-llava", str(tmp_path)) == local


def test_unknown_builtin_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="tiny-llava"):
        resolve_model_path("builtin://giant-llava", str(tmp_path))


def test_revision_of_one_file_is_its_sha256(tiny_dir):
    weights = (Path(tiny_dir) / "model.safetensors").read_bytes()
    assert weights_revision(tiny_dir) == hashlib.sha256(weights).hexdigest()[:12]


def test_revision_of_shards_covers_every_shard(tmp_path):
    (tmp_path / "model-00001-of-00002.safetensors").write_bytes(b"first")
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"second")
    before = weights_revision(str(tmp_path))
    (tmp_path / "model-00002-of-00002.safetensors").write_bytes(b"changed")
    assert weights_revision(str(tmp_path)) != before


def test_revision_needs_safetensors(tmp_path):
    with pytest.raises(FileNotFoundError):
        weights_revision(str(tmp_path))


def test_a_build_that_wrote_no_weights_never_enters_the_cache(tmp_path):
    # what a builder running on a non-zero rank of a process group leaves behind
    def processor_only(path: str) -> str:
        Path(path, "tokenizer.json").write_text("{}")
        return path

    target = tmp_path / "builtin" / "tiny-x"
    with pytest.raises(RuntimeError, match="only global rank 0 can build"):
        build_once(str(target), processor_only)
    assert not target.exists()
    assert list((tmp_path / "builtin").iterdir()) == []  # no staging dir left either
