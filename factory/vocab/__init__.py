"""Label lists as data files: museum categories and visual concepts for zero-shot experts.

A list is plain UTF-8 text, one label per line; blank lines and lines starting with `#` are
ignored. Shipped lists live in this folder as `<name>.txt`; any other list is a local file.
Labels must be unique (case-insensitive): a repeated label would split its probability
between the copies in a softmax and say nothing new.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

MUSEUM_TAXONOMY = "museum_taxonomy"
ART_CONCEPTS = "art_concepts"
_SUFFIX = ".txt"


def shipped() -> list[str]:
    """Names of the lists that ship with the package."""
    return sorted(
        entry.name.removesuffix(_SUFFIX)
        for entry in resources.files(__package__).iterdir()
        if entry.name.endswith(_SUFFIX)
    )


def load_vocabulary(name_or_path: str) -> list[str]:
    """The labels of a shipped list (by name) or of a local file (by path), in file order."""
    return parse_vocabulary(_read(name_or_path), source=name_or_path)


def parse_vocabulary(text: str, source: str = "<text>") -> list[str]:
    labels = []
    for line in text.splitlines():
        label = " ".join(line.split())  # tabs and repeated spaces would change the prompt
        if label and not label.startswith("#"):
            labels.append(label)
    if not labels:
        raise ValueError(f"vocabulary {source!r} has no labels")
    _check_unique(labels, source)
    return labels


def _read(name_or_path: str) -> str:
    if name_or_path in shipped():
        return resources.files(__package__).joinpath(name_or_path + _SUFFIX).read_text("utf-8")
    path = Path(name_or_path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"vocabulary {name_or_path!r} is neither a shipped list ({', '.join(shipped())}) "
            "nor a file"
        )
    return path.read_text("utf-8")


def _check_unique(labels: list[str], source: str) -> None:
    seen: set[str] = set()
    repeated = []
    for label in labels:
        key = label.casefold()
        if key in seen:
            repeated.append(label)
        seen.add(key)
    if repeated:
        raise ValueError(f"vocabulary {source!r} repeats labels: {sorted(set(repeated))}")
