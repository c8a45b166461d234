"""Reading benchmark files: every failure names the file, the record and the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sm70.errors import Sm70Error


def existing(path: Path, what: str) -> Path:
    if not path.exists():
        raise Sm70Error(f"{path}: {what} not found")
    return path


def read_json(path: Path) -> Any:
    existing(path, "file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise Sm70Error(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None


def field(record: dict, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    """`record[name]`, checked for presence and type; `where` is "file:line" or "file: record N"."""
    if name not in record:
        raise Sm70Error(f"{where}: {name}: missing")
    value = record[name]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise Sm70Error(f"{where}: {name}: expected {names}, got {type(value).__name__}")
    return value
