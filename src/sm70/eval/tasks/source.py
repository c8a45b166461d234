"""Reading benchmark files: every failure names the file, the record and the field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from sm70 import textfile
from sm70.textfile import InputError

_SURROGATE = re.compile("[\ud800-\udfff]")


def read_json(path: Path) -> Any:
    """A whole JSON file; a key given twice in one object is an error (it would silently drop an item)."""
    return textfile.read_json(path, unique_keys=True)


def field(record: dict, name: str, kind: type | tuple[type, ...], where: str, label: str | None = None) -> Any:
    """`record[name]`, checked for presence and type; `where` is "file:line" or "file: record N";
    the message calls the field `label` (default `name`)."""
    label = label or name
    if name not in record:
        raise InputError(where, "missing", label)
    value = record[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # JSON true/false are Python bools, and bool is a subclass of int: `"label": true` is not index 1.
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise InputError(where, f"expected {names}, got {type(value).__name__}", label)
    if isinstance(value, str):
        text(value, where, label)
    return value


def text(value: str, where: str, name: str) -> str:
    """A string from a benchmark file, refused if it holds half a UTF-16 pair (JSON can escape one,
    "\\udcff"; such a string cannot be written to results.json or tokenized)."""
    if not value.isascii() and _SURROGATE.search(value):
        raise InputError(where, "contains an unpaired UTF-16 surrogate escape (\\ud800-\\udfff): not text", name)
    return value


def unscorable(question: str, options: dict[str, str]) -> str | None:
    """Why a well-formed item still cannot be scored fairly (it is kept, excluded, and listed in
    results.json), or None."""
    if not question.strip():
        return "the question is empty"
    empty = [k for k, v in options.items() if not v.strip()]
    if empty:
        return f"option {empty[0]} is empty"
    return None
