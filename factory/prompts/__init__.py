"""Prompt templates as versioned data files; their hash goes into every text's lineage.

A template is `<name>.v<N>.txt` in this folder. Fields in braces ({knowledge}) are filled
at render time; a field with no value renders empty.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

_NAME = re.compile(r"^(?P<name>[a-z0-9_]+)\.v(?P<version>\d+)\.txt$")
# caption style -> the template that writes it
STYLE_PROMPTS = {
    "detailed": "caption_fusion",
    "objective": "caption_objective",
    "formal_analysis": "caption_formal_analysis",
}


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: int
    text: str

    @property
    def id(self) -> str:
        return f"{self.name}.v{self.version}"

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def render(self, **fields: str | None) -> str:
        values = {key: value or "" for key, value in fields.items()}
        missing = set(re.findall(r"{(\w+)}", self.text)) - set(values)
        values.update(dict.fromkeys(missing, ""))
        return self.text.format_map(values).strip()


def one_placeholder(template: str, field: str) -> str:
    """A label template such as "a photo of {}": exactly one place for the label."""
    if template.count("{}") != 1:
        raise ValueError(f"{field} needs exactly one {{}}, got {template!r}")
    return template


def available() -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for entry in resources.files(__package__).iterdir():
        if match := _NAME.match(entry.name):
            found.setdefault(match["name"], []).append(int(match["version"]))
    return {name: sorted(versions) for name, versions in sorted(found.items())}


def load_prompt(reference: str) -> PromptTemplate:
    """`name` (newest version) or `name.vN`."""
    name, _, version = reference.partition(".v")
    versions = available().get(name)
    if not versions:
        raise ValueError(f"unknown prompt {reference!r}; available: {sorted(available())}")
    chosen = int(version) if version else versions[-1]
    if chosen not in versions:
        raise ValueError(f"prompt {name!r} has versions {versions}, not {chosen}")
    text = resources.files(__package__).joinpath(f"{name}.v{chosen}.txt").read_text("utf-8")
    return PromptTemplate(name=name, version=chosen, text=text)
