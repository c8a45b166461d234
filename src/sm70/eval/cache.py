"""Per-item results, appended as JSON lines and fsynced, so a killed evaluation resumes where it stopped.

One file per task and run identity (`out/cache/<task>-<key>.jsonl`, one per process under
data parallelism); the key hashes everything that changes a score (model and adapter
fingerprints, data hash, prompt, shots, mode, ...), so a changed setting never reuses old rows.
A line cut short by a kill is ignored; its item is scored again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def run_key(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


class ResultCache:
    def __init__(self, folder: Path, task: str, key: str, rank: int = 0):
        self.folder = folder
        self.stem = f"{task}-{key}"
        self.path = folder / f"{self.stem}.rank{rank}.jsonl"

    def load(self) -> dict[str, dict]:
        """id -> result row, from every process's file of this run."""
        done: dict[str, dict] = {}
        for file in sorted(self.folder.glob(f"{self.stem}.rank*.jsonl")):
            with open(file, encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # the tail of a write interrupted by a kill
                    if isinstance(row, dict) and "id" in row:
                        done[str(row["id"])] = row
        return done

    def append(self, rows: list[dict]) -> None:
        if not rows:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            # A kill can leave a partial last line; start on a fresh line so the next row stays readable.
            if f.tell() and not self._ends_with_newline():
                f.write("\n")
            f.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
            f.flush()
            os.fsync(f.fileno())

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"
