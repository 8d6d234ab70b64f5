"""URIs for local files and S3, resolved to pyarrow filesystems.

Accepted forms: a plain local path, a `file://` URI (percent-encoded, which is how local
names that are not valid UTF-8 travel through Arrow string columns), and `s3://bucket/key`.
S3 endpoint, region and credentials come from the standard AWS environment and config
files (AWS_ENDPOINT_URL, AWS_PROFILE, instance profiles, ...), nothing project-specific.
"""

from __future__ import annotations

import functools
import os
import posixpath
import time
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import quote_from_bytes, unquote_to_bytes

import pyarrow.fs as pafs


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


# S3 throttles in bursts (503 SlowDown) under many parallel readers and writers: more
# patience than the AWS SDK's default of 3 attempts, with its exponential backoff.
S3_MAX_ATTEMPTS = 10
# What the SDK gives up on that a new request fixes. A ranged read (a Parquet footer's 8
# bytes) answered by a throttling error is one: the error's body does not fit the range's
# buffer, and the SDK reports INTERNAL_FAILURE without retrying. Ray Data retries the same
# list for its own file readers (DataContext.retried_io_errors).
TRANSIENT_S3_ERRORS = (
    "AWS Error INTERNAL_FAILURE",
    "AWS Error NETWORK_CONNECTION",
    "AWS Error SLOW_DOWN",
    "AWS Error SERVICE_UNAVAILABLE",
    "AWS Error UNKNOWN (HTTP status 500)",  # a HEAD's error has no body to name it
    "AWS Error UNKNOWN (HTTP status 503)",
)
Result = TypeVar("Result")


def retry_transient(read: Callable[[], Result], attempts: int = S3_MAX_ATTEMPTS) -> Result:
    """`read()`, again after a transient S3 error, with exponential backoff."""
    for attempt in range(attempts - 1):
        try:
            return read()
        except OSError as error:
            if not any(marker in str(error) for marker in TRANSIENT_S3_ERRORS):
                raise
            time.sleep(min(0.05 * 2**attempt, 5.0))
    return read()  # the last attempt's error is the caller's


@functools.lru_cache(maxsize=16)
def _s3_filesystem(bucket: str) -> pafs.FileSystem:
    located, _ = pafs.FileSystem.from_uri(f"s3://{bucket}")  # asks S3 for the bucket's region
    return pafs.S3FileSystem(
        region=located.region,
        # what from_uri takes from the environment, which the constructor does not read
        endpoint_override=os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL"),
        retry_strategy=pafs.AwsStandardS3RetryStrategy(max_attempts=S3_MAX_ATTEMPTS),
    )


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a URI; one S3 client per bucket per process."""
    if is_s3(uri):
        bucket_and_key = uri[len("s3://") :].strip("/")
        bucket = bucket_and_key.split("/", 1)[0]
        return _s3_filesystem(bucket), bucket_and_key
    if uri.startswith("file://"):
        return pafs.LocalFileSystem(), os.fsdecode(unquote_to_bytes(uri[len("file://") :]))
    if "://" in uri:
        raise ValueError(f"unsupported URI scheme in {uri!r}: use a local path, file:// or s3://")
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def local_path_to_uri(path: str) -> str:
    """A string that survives Arrow's UTF-8 columns: the path itself, or a file:// URI."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:  # undecodable bytes arrive as surrogates from os.fsdecode
        return "file://" + quote_from_bytes(os.fsencode(path), safe="/")


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local path or URI, keeping its form."""
    if is_local(base) and not base.startswith("file://"):
        return os.path.normpath(os.path.join(base, *parts))
    scheme, _, rest = base.partition("://")
    return f"{scheme}://" + posixpath.normpath(posixpath.join(rest, *parts))


def parent(uri: str) -> str:
    """The folder or prefix that holds `uri`."""
    if is_local(uri) and not uri.startswith("file://"):
        return os.path.dirname(os.path.abspath(uri))
    return uri.rstrip("/").rsplit("/", 1)[0]


def read_bytes(uri: str) -> bytes:
    filesystem_, path = filesystem(uri)
    if isinstance(filesystem_, pafs.LocalFileSystem):
        # pyarrow cannot encode local names that are not UTF-8; os can
        with open(path, "rb") as handle:
            return handle.read()
    with filesystem_.open_input_stream(path) as stream:
        return stream.read()


def size_of(uri: str) -> int | None:
    """Size in bytes, or None when the URI names no file."""
    filesystem_, path = filesystem(uri)
    if isinstance(filesystem_, pafs.LocalFileSystem):
        return os.path.getsize(path) if os.path.isfile(path) else None
    info = filesystem_.get_file_info(path)
    return info.size if info.type == pafs.FileType.File else None


def write_bytes_atomically(uri: str, data: bytes) -> None:
    """Make `uri` hold `data`, visible only when complete.

    Local files are written beside the target under a dot-name (which Parquet dataset
    readers ignore) and renamed; an S3 object becomes visible only when its upload
    completes, so one upload of the whole buffer is already atomic.
    """
    filesystem_, path = filesystem(uri)
    parent = posixpath.dirname(path) if is_s3(uri) else os.path.dirname(path)
    filesystem_.create_dir(parent, recursive=True)
    if isinstance(filesystem_, pafs.LocalFileSystem):
        temporary = os.path.join(parent, f".tmp-{os.getpid()}-{os.path.basename(path)}")
        with open(temporary, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        return
    with filesystem_.open_output_stream(path) as stream:
        stream.write(data)
