"""Reading benchmark files: every failure names the file, the record and the field."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from sm70.errors import Sm70Error


def sample_path(*parts: str) -> Path:
    """A file or folder of the bundled samples (`src/sm70/samples/...`)."""
    return Path(str(resources.files("sm70").joinpath("samples", *parts)))


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


def read_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(line number, record) for each non-blank line."""
    existing(path, "file")
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise Sm70Error(f"{path}:{lineno}: not valid JSON: {e.msg}") from None
            if not isinstance(row, dict):
                raise Sm70Error(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            rows.append((lineno, row))
    return rows


def field(record: dict, name: str, kind: type | tuple[type, ...], where: str) -> Any:
    """`record[name]`, checked for presence and type; `where` is "file:line" or "file: record N"."""
    if name not in record:
        raise Sm70Error(f"{where}: {name}: missing")
    value = record[name]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise Sm70Error(f"{where}: {name}: expected {names}, got {type(value).__name__}")
    return value
