"""Typed configs: a YAML recipe plus `key=value` (dotted) overrides -> a frozen pydantic model.

Every command has one `Config` subclass. Unknown keys are errors that name the key, so a typo in
a recipe fails at once instead of silently training with a default.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from sm70.errors import ConfigError
from sm70.textfile import read_text

C = TypeVar("C", bound="Config")


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.dump(), sort_keys=False, allow_unicode=True)


_SURROGATE = re.compile("[\ud800-\udfff]")
RECIPE_LIMIT = 1 << 20   # bytes: recipes are a few hundred; anything near this is not a recipe
EXPANDED_LIMIT = 100_000  # values in a recipe once YAML aliases are expanded (a "billion laughs" file)


class _RecipeLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping: PyYAML would keep the last one silently,
    so `lr: 1e-4` early in a recipe and `lr: 1e-3` further down would train with a value nobody chose."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may be overridden key by key
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (first on line {seen[key] + 1})", key_node.start_mark)
            if isinstance(key, (str, int, float, bool)):
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def read_recipe(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: recipe not found")
    text = read_text(path, limit=RECIPE_LIMIT)
    try:
        data = yaml.load(text, Loader=_RecipeLoader)
    except yaml.MarkedYAMLError as e:
        raise ConfigError(_yaml_problem(path, text, e)) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except RecursionError:
        raise ConfigError(f"{path}: not valid YAML: nested too deeply to read") from None
    except ValueError as e:  # a scalar YAML types but cannot build: `seed: 2024-13-45`, a 5,000-digit number
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of keys to values, got {type(data).__name__}")
    _check_values(path, data)
    return data


def _yaml_problem(path: Path, text: str, e: yaml.MarkedYAMLError) -> str:
    mark = e.problem_mark or e.context_mark
    if mark is None:
        return f"{path}: not valid YAML: {e.problem}"
    problem = " ".join(p for p in (e.context, e.problem) if p)
    if "\t" in text.split("\n")[mark.line] if mark.line < text.count("\n") + 1 else False:
        problem += " (the line has a tab: YAML indents with spaces, never tabs)"
    return f"{path}:{mark.line + 1}: not valid YAML: {problem}"


def _check_values(path: Path, data: Any) -> None:
    """Every value once, as later steps will see it: bounded in number, and writable as UTF-8.

    Aliases are shared, not copied, so the file loads small; but every later step (validation,
    printing the resolved config) walks the expansion, which a crafted file makes astronomically
    large. A YAML escape can spell half a UTF-16 pair ("\\udce9"), which the data card could not hold.
    """
    budget, stack = EXPANDED_LIMIT, [data]
    while stack:
        node = stack.pop()
        budget -= 1
        if budget < 0:
            raise ConfigError(f"{path}: more than {EXPANDED_LIMIT:,} values once YAML aliases are expanded; "
                              "a recipe this large is not a recipe")
        if isinstance(node, str) and not node.isascii() and _SURROGATE.search(node):
            raise ConfigError(f"{path}: the value {node!r} holds an unpaired UTF-16 surrogate escape "
                              "(\\ud800-\\udfff), which no output file can hold")
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=3` -> (['a', 'b'], 3). Values are read as YAML scalars/flow collections."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    keys = key.split(".")
    if not all(keys):
        raise ConfigError(f"override {text!r}: an empty part in the key {key!r}")
    if _SURROGATE.search(text):
        # Python keeps argv bytes that are not UTF-8 as surrogate escapes; no output file could hold them.
        raise ConfigError(f"override {text.encode('utf-8', 'surrogateescape')!r}: not valid UTF-8 (set the "
                          "terminal to UTF-8, or put the value in the recipe)")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except (yaml.YAMLError, ValueError, RecursionError):  # not YAML (or a date YAML cannot build): the text itself
        value = raw
    return keys, value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    data = dict(data)
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = data
        for k in keys[:-1]:
            node = _child(node, k, text)
        if isinstance(node, list):
            node[_index(node, keys[-1], text)] = value
        else:
            node[keys[-1]] = value
    return data


def _child(node: Any, key: str, text: str) -> Any:
    """The copy of node[key] that an override descends into: `sources.0.path=x` reaches into a list."""
    if isinstance(node, list):
        i = _index(node, key, text)
        child = node[i]
        child = dict(child) if isinstance(child, dict) else list(child) if isinstance(child, list) else {}
        node[i] = child
        return child
    child = node.get(key)
    child = dict(child) if isinstance(child, dict) else list(child) if isinstance(child, list) else {}
    node[key] = child
    return child


def _index(node: list, key: str, text: str) -> int:
    if not key.isdigit() or int(key) >= len(node):
        raise ConfigError(f"override {text!r}: {key!r} is not an index of the {len(node)}-item list")
    return int(key)


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
            lines.append(f"key {key!r}: {err['msg']} (got {_short(err.get('input'))})")
    return "; ".join(lines)


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text):,} characters)"
