"""`sm70 COMMAND --help` and `sm70 help COMMAND`: what a command takes, read from its config class.

The config class is the one place a command's keys are declared (type, default, `Field(description=...)`),
so the help is generated from it and cannot drift from what the command accepts.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

REPO_ROOT = Path(__file__).resolve().parents[2]


def type_name(annotation) -> str:
    """`int`, `str | None`, `one of nf4|none`, `list[str] | all-linear` — readable, not repr()."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "|".join(str(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(annotation))
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(annotation))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return "path" if issubclass(annotation, Path) else annotation.__name__
    return str(annotation)


def field_rows(config: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, description) for every key, nested configs as dotted keys."""
    rows = []
    for name, field in config.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += field_rows(annotation, f"{prefix}{name}.")
            continue
        if field.default is not PydanticUndefined:
            default = repr(field.default) if not isinstance(field.default, Path) else str(field.default)
        elif field.default_factory is not None:
            default = repr(field.default_factory())
        else:
            default = "required"
        rows.append((prefix + name, type_name(annotation), default, field.description or ""))
    return rows


def recipes_for(words: tuple[str, ...]) -> list[str]:
    folder = REPO_ROOT / "recipes" / ("pipeline" if words[0] in ("run", "demo") else words[0])
    if not folder.is_dir():
        return []
    return [str(p.relative_to(REPO_ROOT)) for p in sorted(folder.glob("*.yaml"))]


def command_help(words: tuple[str, ...], cmd, config: type[BaseModel]) -> str:
    args = " ".join(p.upper() for p in cmd.positionals)
    lines = [f"usage: sm70 {' '.join(words)} [RECIPE.yaml]{' ' + args if args else ''} [key=value ...]", "",
             cmd.help, ""]
    if cmd.positionals:
        lines.append("positional arguments (each sets the key of the same name):")
        lines += [f"  {p.upper():<12} {p}" for p in cmd.positionals]
        lines.append("")
    rows = field_rows(config)
    width = min(28, max(len(r[0]) for r in rows)) if rows else 0
    lines.append("keys (key=value; dotted for nested keys):")
    for key, kind, default, description in rows:
        lines.append(f"  {key:<{width}}  {kind}, default {default}")
        if description:
            lines.append(f"  {'':<{width}}    {description}")
    recipes = recipes_for(words)
    if recipes:
        lines += ["", "recipes shipped for it:"] + [f"  {r}" for r in recipes]
    return "\n".join(lines)
