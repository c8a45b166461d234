"""The chunks of an index: `chunks.jsonl` (one chunk a line, its text included) and `chunks.offsets.npy`
(the byte offset of each line), so a search reads only the lines of the chunks it returns."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

CHUNKS, OFFSETS = "chunks.jsonl", "chunks.offsets.npy"


def write_chunks(folder: Path, chunks: Iterable[dict]) -> int:
    offsets = [0]
    with open(folder / CHUNKS, "wb") as f:
        for chunk in chunks:
            line = (json.dumps(chunk, ensure_ascii=False) + "\n").encode("utf-8")
            f.write(line)
            offsets.append(offsets[-1] + len(line))
    np.save(folder / OFFSETS, np.asarray(offsets, dtype=np.int64))
    return len(offsets) - 1


class ChunkStore:
    def __init__(self, folder: Path):
        self.path = folder / CHUNKS
        self.offsets = np.load(folder / OFFSETS, mmap_mode="r")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, numbers: Iterable[int]) -> list[dict]:
        out = []
        with open(self.path, "rb") as f:
            for i in numbers:
                f.seek(int(self.offsets[i]))
                out.append(json.loads(f.read(int(self.offsets[i + 1] - self.offsets[i]))))
        return out

    def range(self, first: int, count: int) -> list[dict]:
        return self.get(range(first, first + count))

    def __iter__(self) -> Iterator[dict]:
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                yield json.loads(line)
