"""Typed configs: a YAML recipe plus `key=value` (dotted) overrides -> a frozen pydantic model.

Every command has one `Config` subclass. Unknown keys are errors that name the key, so a typo in
a recipe fails at once instead of silently training with a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from sm70.errors import ConfigError

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.dump(), sort_keys=False, allow_unicode=True)


def read_recipe(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of keys to values, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=3` -> (['a', 'b'], 3). Values are read as YAML scalars/flow collections."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = dict(data)
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            child = node.get(k)
            child = dict(child) if isinstance(child, dict) else {}
            node[k] = child
            node = child
        node[keys[-1]] = value
    return data


def load_config(cls: type[C], recipe: str | Path | None = None, overrides: list[str] | None = None,
                **defaults: Any) -> C:
    """Build `cls` from `defaults`, then the recipe file, then the overrides (last wins)."""
    data: dict[str, Any] = dict(defaults)
    if recipe is not None:
        data.update(read_recipe(recipe))
    data = apply_overrides(data, list(overrides or []))
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        where = f"{recipe}: " if recipe else ""
        raise ConfigError(where + describe_validation_error(e)) from None


def describe_validation_error(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown key {key!r}")
        elif err["type"] == "missing":
            lines.append(f"missing required key {key!r}")
        else:
            lines.append(f"key {key!r}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(lines)
