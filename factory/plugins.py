"""Code a config names by import path, "package.module:attribute": a custom engine class,
a training hook. Loaded where it runs (an actor, a training worker), never at config time."""

from __future__ import annotations

import importlib
import re
from typing import Annotated, Any

from pydantic import AfterValidator

IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def _checked(path: str) -> str:
    if not IMPORT_PATH.match(path):
        raise ValueError(f"{path!r} is not an import path: write 'package.module:attribute'")
    return path


ImportPath = Annotated[str, AfterValidator(_checked)]


def load(path: str) -> Any:
    """The attribute an import path names."""
    module_name, attribute = _checked(path).split(":")
    return getattr(importlib.import_module(module_name), attribute)
