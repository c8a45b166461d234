"""Units to chunks of about `size` characters overlapping by `overlap`, cut where text breaks.

A chunk never crosses a unit (page, record) or a section; a record of at most `record_max`
characters is one chunk whatever `size` is, as MedRAG keeps one chunk per PubMed abstract. A cut
falls at the last paragraph break, else line break, else sentence end, else space in the second
half of the window, so chunks end on words. Offsets count characters in the unit's text.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator

from sm70.retrieval.documents import Document, Unit

_BREAKS = (re.compile(r"\n\s*\n"), re.compile(r"\n"), re.compile(r"[.!?;:][\"')\]]*\s"), re.compile(r"\s"))


class ChunkSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    size: int = Field(1000, ge=50, description="characters per chunk, about (MedRAG's snippets: ~1,000)")
    overlap: int = Field(200, ge=0, description="characters two neighbouring chunks share")
    record_max: int = Field(4000, ge=0, description="a record (JSON/JSONL) of at most this many characters "
                            "is one chunk")

    @model_validator(mode="after")
    def _overlap_below_size(self):
        if self.overlap >= self.size // 2:
            raise ValueError(f"overlap ({self.overlap}) must be under half the chunk size ({self.size})")
        return self


@dataclass
class Chunk:
    document: str        # path relative to the docs folder
    title: str
    location: str        # "page 3", "record 123", "section: Dosing", "page 2, section: Doses"
    start: int           # character offsets in the unit's text
    end: int
    text: str
    record: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def _cut(text: str, start: int, limit: int) -> int:
    """Where a chunk that starts at `start` ends, at most `limit`."""
    if limit >= len(text):
        return len(text)
    floor = start + (limit - start) // 2
    for pattern in _BREAKS:
        last = None
        for m in pattern.finditer(text, floor, limit):
            last = m
        if last is not None:
            return last.end()
    return limit


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def split(text: str, start: int, end: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) spans of text[start:end] of about `size` characters."""
    spans = []
    while True:
        start, end = _strip(text, start, end)
        if start >= end:
            return spans
        if end - start <= size:
            spans.append((start, end))
            return spans
        cut = _cut(text, start, start + size)
        spans.append(_strip(text, start, cut))
        nxt = max(cut - overlap, start + 1)
        # begin the overlap on a word, not inside one
        while start < nxt < cut and not text[nxt - 1].isspace():
            nxt += 1
        start = nxt if nxt < cut else cut


def _location(unit: Unit, section: str) -> str:
    return ", ".join(p for p in (unit.location, f"section: {section}" if section else "") if p)


def chunk_document(doc: Document, path: str, settings: ChunkSettings) -> list[Chunk]:
    chunks = []
    for unit in doc.units:
        # a record without a title of its own is not titled after its file (one file holds thousands)
        title = unit.title or ("" if unit.record is not None else doc.title)
        if unit.record is not None and len(unit.text) <= max(settings.record_max, settings.size):
            start, end = _strip(unit.text, 0, len(unit.text))
            chunks.append(Chunk(path, title, unit.location, start, end, unit.text[start:end], unit.record))
            continue
        bounds = [(0, "")] + [s for s in unit.sections if s[0] > 0]
        if unit.sections and unit.sections[0][0] == 0:
            bounds[0] = unit.sections[0]
        for (begin, section), (stop, _) in zip(bounds, bounds[1:] + [(len(unit.text), "")]):
            for s, e in split(unit.text, begin, stop, settings.size, settings.overlap):
                chunks.append(Chunk(path, title, _location(unit, section), s, e, unit.text[s:e], unit.record))
    return chunks
