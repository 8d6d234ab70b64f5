from __future__ import annotations

import pytest

from factory.eval.tokenize import java_available

needs_java = pytest.mark.skipif(not java_available(), reason="pycocoevalcap's PTB/METEOR need Java")
