from __future__ import annotations

import pytest

from tests.review import fakerun


@pytest.fixture
def run(tmp_path, s3_bucket) -> fakerun.FakeRun:
    """A fake caption run over local and S3 source images (see fakerun.SOURCES)."""
    return fakerun.build(str(tmp_path / "src"), s3_bucket)
