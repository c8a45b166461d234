"""The audit log: one JSON line per request, hash-chained, and `sm70 audit verify LOG`.

Each line carries `prev`, the sha256 of the previous line's bytes, and `hash`, the sha256 of its
own content without `hash`. Editing any line breaks its own `hash`; removing or reordering lines
breaks the next line's `prev`. Removing the last lines leaves a shorter valid chain, so `verify`
prints the head hash: record it elsewhere (a ticket, a second machine) and pass it back as
`head=` to detect truncation as well.

A line is written with one `write` on an O_APPEND descriptor and fsync'd before the response's
last byte leaves, so even SIGKILL leaves only whole lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from sm70.config import Config
from sm70.errors import Sm70Error

GENESIS = "0" * 64


def line_hash(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def content_hash(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class AuditLog:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._prev = self._last_hash()

    def _last_hash(self) -> str:
        last = None
        with open(self.path, "rb") as f:
            for line in f:
                if line.strip():
                    last = line
        return line_hash(last) if last is not None else GENESIS

    def write(self, entry: dict) -> None:
        """Append one entry, chained to the previous one; durable when this returns."""
        with self._lock:
            entry = {**entry, "prev": self._prev}
            entry["hash"] = content_hash(entry)
            line = json.dumps(entry, ensure_ascii=False).encode()
            os.write(self._fd, line + b"\n")
            os.fsync(self._fd)
            self._prev = line_hash(line)

    def close(self) -> None:
        os.close(self._fd)


class VerifyConfig(Config):
    log: Path
    head: str | None = None


def check_chain(path: Path) -> tuple[int, str, str | None]:
    """(lines checked, head hash, problem or None); the problem names the first bad line."""
    prev = GENESIS
    n = 0
    with open(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict):
                    raise ValueError("not an object")
            except ValueError:
                return n, prev, f"{path}:{n}: not a JSON object (line damaged or truncated)"
            if entry.get("prev") != prev:
                return n, prev, (f"{path}:{n}: prev: does not match line {n - 1}'s hash "
                                 f"(a line before it was edited, removed or inserted)")
            if entry.get("hash") != content_hash(entry):
                return n, prev, f"{path}:{n}: hash: does not match the line's content (this line was edited)"
            prev = line_hash(line)
    return n, prev, None


def verify(cfg: VerifyConfig) -> int:
    if not cfg.log.is_file():
        raise Sm70Error(f"{cfg.log}: audit log not found")
    n, head, problem = check_chain(cfg.log)
    if problem:
        print(f"BROKEN {problem}")
        return 1
    if cfg.head is not None and cfg.head != head:
        print(f"BROKEN {cfg.log}: head: the last line's hash is {head}, expected {cfg.head} "
              f"(lines were removed from the end, or it is another log)")
        return 1
    print(f"OK {cfg.log}: {n} lines, chain intact, head {head}")
    return 0
