"""Model weights on local disk: local directories as they are, remote prefixes fetched once.

`s3://bucket/prefix` is copied once per node into a local cache that every process on the
node shares: a file lock makes concurrent callers wait for one download instead of each
starting their own, and the copy lands under its final name by an atomic rename, so a
directory under that name is always complete and is reused without asking S3 again.
S3 endpoint and credentials come from the standard AWS environment (AWS_ENDPOINT_URL,
AWS_PROFILE, instance profiles, ...) through pyarrow.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow.fs as pafs

from factory.io import uris

DEFAULT_CACHE_DIR = "~/.cache/caption-factory/models"
S3_SCHEME = "s3://"
BUILTIN_SCHEME = "builtin://"
# name -> (cache directory, "module:function(path) -> path" that builds it there).
# The directory carries a version: bump it when the builder changes what it writes.
BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    "tiny-llava": ("tiny-llava-v1", "factory.models.demo.chat_models:ensure_tiny_llava"),
    "tiny-llama": ("tiny-llama-v1", "factory.models.demo.chat_models:ensure_tiny_llama"),
    "tiny-blip": ("tiny-blip-v1", "factory.models.demo.blip:ensure_tiny_blip"),
    "tiny-clip": ("tiny-clip-v1", "factory.models.demo.vision:ensure_tiny_clip"),
    "tiny-owlv2": ("tiny-owlv2-v1", "factory.models.demo.vision:ensure_tiny_owlv2"),
    "tiny-owlvit": ("tiny-owlvit-v1", "factory.models.demo.vision:ensure_tiny_owlvit"),
}
RANDOM_WEIGHTS_NOTE = "random-weight demo model: its outputs are noise, not descriptions"


def builtin_note(uri: str) -> str | None:
    """What a run summary must say about a builtin model's output, or None."""
    name = uri[len(BUILTIN_SCHEME) :].strip("/") if uri.startswith(BUILTIN_SCHEME) else None
    return RANDOM_WEIGHTS_NOTE if name in BUILTIN_MODELS else None


_CHUNK_BYTES = 8 * 1024 * 1024


def resolve_model_path(uri: str, cache_dir: str | None = None) -> str:
    """A local directory holding the model's files, fetching or building them if needed.

    `uri` is a local directory (returned as is), `s3://bucket/prefix` (copied once per node
    into `cache_dir`) or `builtin://tiny-llava` (built offline once into `cache_dir`).
    """
    if uri.startswith(S3_SCHEME):
        return _fetch_s3_once(uri, _cache_root(cache_dir))
    if uri.startswith(BUILTIN_SCHEME):
        return _ensure_builtin(uri, _cache_root(cache_dir))
    if "://" in uri:
        raise ValueError(
            f"unsupported model URI {uri!r}: use a local directory, s3://bucket/prefix or "
            f"builtin://NAME (one of {sorted(BUILTIN_MODELS)})"
        )
    path = Path(uri).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(
            f"model directory {str(path)!r} does not exist (expected a local directory with "
            "the model's config and weights, an s3://bucket/prefix or builtin://NAME)"
        )
    return str(path)


def weights_revision(model_dir: str) -> str:
    """12 hex digits identifying the weights' content, for lineage when no revision is given.

    One file: its sha256 (what `sha256sum model.safetensors` prints). Several shards: the
    sha256 of their "path digest" lines. Reads every byte once, so for a large model it is
    cheaper to pin `revision` in the engine config.
    """
    root = Path(model_dir)
    files = sorted(root.rglob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no *.safetensors files under {model_dir!r}")
    digests = {file.relative_to(root).as_posix(): _sha256_file(file) for file in files}
    if len(digests) == 1:
        return next(iter(digests.values()))[:12]
    manifest = "".join(f"{name} {digest}\n" for name, digest in digests.items())
    return hashlib.sha256(manifest.encode()).hexdigest()[:12]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _cache_root(cache_dir: str | None) -> Path:
    return Path(cache_dir or DEFAULT_CACHE_DIR).expanduser()


def cache_name(uri: str) -> str:
    """Directory name for a remote URI: readable tail plus a hash, so prefixes never collide."""
    normalized = uri.rstrip("/")
    tail = re.sub(r"[^A-Za-z0-9._-]+", "_", normalized.rsplit("/", 1)[-1])[:40]
    return f"{tail}-{hashlib.sha256(normalized.encode()).hexdigest()[:16]}"


def _fetch_s3_once(uri: str, cache_root: Path) -> str:
    target = cache_root / cache_name(uri)
    if target.is_dir():  # only a finished download is ever renamed to this name
        return str(target)
    cache_root.mkdir(parents=True, exist_ok=True)
    with _exclusive_lock(cache_root / f".{target.name}.lock"):
        if not target.is_dir():  # the holder before us may have finished it
            _remove_partial_downloads(target)
            _download_into(uri.rstrip("/"), target)
    return str(target)


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    # flock, not lockf: flock excludes threads of one process too (they open their own file
    # descriptions), and the kernel drops the lock if its holder dies mid-download.
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _partial_prefix(target: Path) -> str:
    return f".{target.name}.partial-"


def _remove_partial_downloads(target: Path) -> None:
    # Only a lock holder writes partial copies, so under the lock any that exist were left
    # by a process that died mid-download.
    for leftover in target.parent.glob(_partial_prefix(target) + "*"):
        shutil.rmtree(leftover)


def _download_into(uri: str, target: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=_partial_prefix(target), dir=target.parent))
    try:
        _copy_prefix(uri, staging)
        staging.chmod(0o755)  # mkdtemp makes it private; the cache serves every local user
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # no-op once renamed


def _copy_prefix(uri: str, destination: Path) -> None:
    filesystem, prefix = uris.filesystem(uri)
    selector = pafs.FileSelector(prefix, allow_not_found=True, recursive=True)
    listing = filesystem.get_file_info(selector)
    if not any(info.type == pafs.FileType.File for info in listing):
        raise FileNotFoundError(f"no model files under {uri!r}")
    pafs.copy_files(
        prefix,
        str(destination),
        source_filesystem=filesystem,
        destination_filesystem=pafs.LocalFileSystem(),
        chunk_size=_CHUNK_BYTES,
        use_threads=True,
    )


def build_once(path: str, build: Callable[[str], str]) -> str:
    """Build at `path` unless it is already there; safe to call concurrently.

    The model is built in a temp dir beside `path` and renamed into place, so a reader never
    sees a half-written directory; a caller that loses the race discards its own copy.
    """
    target = Path(path)
    if target.is_dir():
        return str(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
    try:
        build(str(staging))
        _check_complete(staging)
        staging.chmod(0o755)  # mkdtemp makes it private; the model dir is for every local user
        try:
            staging.rename(target)
        except OSError:
            # Another caller renamed its build into place first; theirs is as good as ours.
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return str(target)


def _check_complete(staging: Path) -> None:
    # transformers 5 writes a model's config and weights only on global rank 0 of a torch
    # process group: a builder running on another rank leaves the processor alone, which
    # must never be renamed into the shared cache.
    if not any(staging.glob("*.safetensors")):
        raise RuntimeError(
            f"building {staging.name} wrote no *.safetensors weights; inside a torch process "
            "group only global rank 0 can build a model (resolve builtin:// weights on rank 0 "
            "first, as factory.train does)"
        )


def _ensure_builtin(uri: str, cache_root: Path) -> str:
    name = uri[len(BUILTIN_SCHEME) :].strip("/")
    if name not in BUILTIN_MODELS:
        raise ValueError(f"unknown builtin model {name!r}; known: {sorted(BUILTIN_MODELS)}")
    directory, builder = BUILTIN_MODELS[name]
    module_name, function_name = builder.split(":")
    # Imported here: builders need torch, and this module must stay light.
    build = getattr(importlib.import_module(module_name), function_name)
    return build(str(cache_root / "builtin" / directory))
