"""Any typed config from defaults, a YAML file and `key=value` overrides, in that order.

Generic over the config class (a caption run's, serving's, training's, evaluation's): it
imports none of them, so loading one does not import the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar, get_args

import yaml
from pydantic import BaseModel, ValidationError

Config = TypeVar("Config", bound=BaseModel)


def apply_override(
    tree: dict[str, Any], assignment: str, model: type[BaseModel] | None = None
) -> None:
    """Apply one `a.b.c=value`; the value is parsed as YAML (numbers, null, lists...).

    A section that is off (null) is first given its defaults, so one field of it can be set.
    """
    key, separator, raw = assignment.partition("=")
    if not separator or not key.strip():
        raise ValueError(f"override {assignment!r} is not key=value")
    *parents, leaf = key.strip().split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = section_defaults(model, part)
        if not isinstance(child, dict):
            raise ValueError(f"override {assignment!r}: {part!r} is not a section")
        node, model = child, section_model(model, part)
    node[leaf] = yaml.safe_load(raw)


def merge(
    base: dict[str, Any], update: dict[str, Any], model: type[BaseModel] | None = None
) -> dict[str, Any]:
    """Deep-merge `update` onto `base`: a section names only the fields it changes, and a
    section that is off by default starts from its defaults."""
    merged = dict(base)
    for key, value in update.items():
        current = merged.get(key)
        if isinstance(value, dict) and current is None:
            current = section_defaults(model, key)
        if isinstance(value, dict) and isinstance(current, dict):
            merged[key] = merge(current, value, section_model(model, key))
        else:
            merged[key] = value
    return merged


def section_model(model: type[BaseModel] | None, key: str) -> type[BaseModel] | None:
    """The config class of field `key` of `model` (`X | None` unwrapped), if it is one."""
    field = model.model_fields.get(key) if model is not None else None
    if field is None:
        return None
    candidates = [field.annotation, *get_args(field.annotation)]
    models = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
    return models[0] if len(models) == 1 else None


def section_defaults(model: type[BaseModel] | None, key: str) -> dict[str, Any]:
    """Field `key`'s section with every default filled in; {} when it has no defaults."""
    section = section_model(model, key)
    if section is None:
        return {}
    try:
        return section().model_dump(mode="json")
    except ValidationError:  # required fields: only the update gives them
        return {}


def load_config(
    path: str | Path | None = None,
    overrides: Sequence[str] = (),
    *,
    model: type[Config],
) -> Config:
    """Defaults, then the YAML file, then each `key=value`; each layer only changes fields."""
    try:
        tree = model().model_dump(mode="json")
    except ValidationError:  # required fields (a training run's data): they come from the file
        tree = {}
    if path is not None:
        loaded = read_yaml(path)
        if loaded is not None and not isinstance(loaded, dict):
            raise ValueError(f"config {path} must be a mapping, not {type(loaded).__name__}")
        # top-level x-* keys hold YAML anchors that the sections reference (x-vlm: &vlm ...)
        loaded = {k: v for k, v in (loaded or {}).items() if not str(k).startswith("x-")}
        tree = merge(tree, loaded, model)
    for assignment in overrides:
        apply_override(tree, assignment, model)
    try:
        return model.model_validate(tree)
    except ValidationError as error:
        error.add_note(explain(error, model))  # the CLI's one line
        raise


def explain(error: ValidationError, model: type[BaseModel]) -> str:
    """The errors on one line; an unknown key comes with the keys valid in its place."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        if item["type"] != "extra_forbidden":
            parts.append(f"{where}: {item['msg']}")
            continue
        section: type[BaseModel] | None = model
        for part in item["loc"][:-1]:
            section = section_model(section, str(part))
        known = f" (known here: {', '.join(section.model_fields)})" if section else ""
        parts.append(f"unknown key {where!r}{known}")
    return "; ".join(parts)


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content; bad YAML is a ValueError naming the file, line and problem."""
    try:
        return yaml.safe_load(Path(path).read_text("utf-8"))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark else str(path)
        raise ValueError(f"{where}: not valid YAML: {error.problem or error.context}") from None
