"""Prompt templates for the endpoints: the factory's own, plus the few only serving needs.

Serving-only templates (`serve_answer`: one question about one image) live beside this
module as `<name>.v<N>.txt`, in the same format and with the same hash-in-lineage as
`factory/prompts`, so a caption from the API and one from a batch run are comparable.
"""

from __future__ import annotations

import re
from importlib import resources

from factory.prompts import PromptTemplate, load_prompt

_NAME = re.compile(r"^(?P<name>[a-z0-9_]+)\.v(?P<version>\d+)\.txt$")


def _serving_templates() -> dict[str, dict[int, str]]:
    found: dict[str, dict[int, str]] = {}
    for entry in resources.files(__package__).joinpath("prompts").iterdir():
        if match := _NAME.match(entry.name):
            found.setdefault(match["name"], {})[int(match["version"])] = entry.name
    return found


def load_template(reference: str) -> PromptTemplate:
    """`name` (newest version) or `name.vN`, from serving's folder, else factory/prompts."""
    name, _, version = reference.partition(".v")
    versions = _serving_templates().get(name)
    if not versions:
        return load_prompt(reference)
    chosen = int(version) if version else max(versions)
    if chosen not in versions:
        raise ValueError(f"prompt {name!r} has versions {sorted(versions)}, not {chosen}")
    folder = resources.files(__package__).joinpath("prompts")
    text = folder.joinpath(versions[chosen]).read_text("utf-8")
    return PromptTemplate(name=name, version=chosen, text=text)
