"""Retrying what the AWS SDK gives up on but a new request fixes."""

from __future__ import annotations

import pytest

from factory.io.uris import retry_transient


def failing(errors: list[OSError]):
    """A read that raises each of `errors` in turn, then returns how many calls it took."""
    calls = []

    def read() -> int:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return len(calls)

    return read


def test_transient_s3_errors_are_retried_until_the_read_succeeds():
    throttled = OSError("AWS Error SLOW_DOWN during GetObject operation: Please reduce")
    head = OSError("AWS Error UNKNOWN (HTTP status 500) during HeadObject operation")
    cut = OSError("AWS Error INTERNAL_FAILURE during GetObject operation: Failed to flush")
    assert retry_transient(failing([throttled, head, cut])) == 4


def test_other_errors_and_the_last_attempt_reach_the_caller():
    missing = OSError("Path does not exist 'bucket/key'")
    with pytest.raises(OSError, match="does not exist"):
        retry_transient(failing([missing]))
    throttled = OSError("AWS Error SLOW_DOWN during GetObject operation")
    with pytest.raises(OSError, match="SLOW_DOWN"):
        retry_transient(failing([throttled] * 3), attempts=3)
    assert retry_transient(failing([throttled] * 2), attempts=3) == 3
