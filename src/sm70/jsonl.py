"""Reading JSON Lines files that people hand us: every failure names the file and the line."""

from __future__ import annotations

from pathlib import Path

from sm70 import textfile
from sm70.textfile import InputError, where


def read_jsonl(path: str | Path, unique_keys: bool = False) -> list[tuple[int, dict]]:
    """(line number, object) for each non-blank line; a line that is not a JSON object is an error.
    `unique_keys`: a key given twice in one object is an error (benchmark files, where it would
    silently change an item)."""
    rows = []
    for number, text, error in textfile.lines(path):
        if error:
            raise InputError(where(path, number), error)
        if text.isspace():
            continue
        try:
            row = textfile.parse_json(text, unique_keys)
        except ValueError as e:
            raise InputError(where(path, number), textfile.json_problem(e)) from None
        if not isinstance(row, dict):
            raise InputError(where(path, number), f"expected a JSON object, got {type(row).__name__}")
        rows.append((number, row))
    return rows
