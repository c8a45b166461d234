"""Reading sources as a stream of raw rows, each with the file and the line or record it came from.

Local JSON (a list of objects, the Medical Meadow layout), JSONL, CSV and Parquet are read row by
row; a JSON list is decoded one object at a time from the file text, so the parsed rows are never
all in memory. Benchmark formats (medqa, pubmedqa, usmle) are read by `sm70.eval.tasks`, the one
parser per format that the evaluation stage uses too. Hub ids are fetched only when the operator
allows the network (`SM70_ALLOW_HUB=1`); offline, the error says which file to download and where.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from sm70.data.catalog import subset
from sm70.data.config import SourceConfig
from sm70.errors import Sm70Error

SAMPLES = "samples://"
TASK_OF_FORMAT = {"medqa": "medqa", "pubmedqa": "pubmedqa", "usmle": "usmle"}
_BETWEEN = re.compile(r"[\s,]*")  # whitespace and the comma between two objects of a JSON list


class RawRow(NamedTuple):
    # A named tuple, not a dataclass: rows are pickled to the worker processes, and tuples pickle fastest.
    file: str             # the same str object for every row of a file, so pickle sends it once per chunk
    line: int | None      # 1-based line the record starts on, where the format has lines
    record: int           # 0-based position in the source
    value: Any            # dict for tables; an sm70.eval.tasks Item for benchmark formats
    error: str | None = None  # set when the row could not even be decoded (value is then the raw text)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else f"{self.file}: record {self.record}"


def resolve_path(text: str) -> Path:
    """A recipe path: `samples://medqa/test.jsonl` is a bundled sample; anything else is a local path."""
    if text.startswith(SAMPLES):
        from sm70.samples import sample_path

        try:
            return sample_path(*text[len(SAMPLES):].split("/"))
        except FileNotFoundError as e:
            raise Sm70Error(str(e)) from None
    return Path(text).expanduser()


class Source:
    """A configured source, resolved: where it is, its licence, and its rows."""

    def __init__(self, cfg: SourceConfig):
        self.cfg = cfg
        entry = subset(cfg.catalog) if cfg.catalog else None
        self.hub = cfg.hub or (entry.hub if entry and not cfg.path else None)
        self.path = resolve_path(cfg.path) if cfg.path else None
        self.licence = cfg.licence or (entry.licence if entry else None)
        self.entry = entry
        if self.path is not None and not self.path.exists():
            raise Sm70Error(f"source {cfg.name}: {self.path}: file not found")
        if self.hub is not None:
            self._check_hub()

    @property
    def location(self) -> str:
        return str(self.path) if self.path is not None else f"hub:{self.hub}"

    def files(self) -> list[Path]:
        if self.path is None:
            return []
        return [self.path] if self.path.is_file() else sorted(p for p in self.path.rglob("*") if p.is_file())

    def rows(self) -> Iterator[RawRow]:
        """Raw rows in source order, at most `max_rows` of them."""
        cap = self.cfg.max_rows
        for n, row in enumerate(self._rows()):
            if cap is not None and n >= cap:
                return
            yield row

    def _rows(self) -> Iterator[RawRow]:
        if self.cfg.format in TASK_OF_FORMAT:
            yield from self._items()
        elif self.hub is not None:
            yield from read_hub(self.hub, self.cfg.split)
        else:
            yield from read_table(self.path)

    def _items(self) -> Iterator[RawRow]:
        from sm70.eval.tasks import load_task

        if self.path is None:
            raise Sm70Error(f"source {self.cfg.name}: format {self.cfg.format} reads a local file or folder (path:)")
        options = {} if self.cfg.format == "usmle" else {"split": self.cfg.split}
        file = str(self.path)
        for i, item in enumerate(load_task(TASK_OF_FORMAT[self.cfg.format], self.path, **options)):
            yield RawRow(file, None, i, item)

    def _check_hub(self) -> None:
        from sm70.model.load import hub_allowed, hub_unreachable

        if not hub_allowed():
            why = "the network is off (set SM70_ALLOW_HUB=1 on a machine that may download)"
        elif (why := hub_unreachable()) is None:
            return
        file = self.entry.file if self.entry else "its data file"
        raise Sm70Error(
            f"source {self.cfg.name}: hub dataset {self.hub} cannot be fetched: {why}. Offline, download {file} from "
            f"https://huggingface.co/datasets/{self.hub}/tree/main, put it in data/medical_meadow/ and "
            f"set `path: data/medical_meadow/{file}` for this source")


def read_table(path: Path) -> Iterator[RawRow]:
    suffix = path.suffix.lower()
    readers = {".json": read_json_list, ".jsonl": read_jsonl, ".csv": read_csv, ".parquet": read_parquet}
    if suffix not in readers:
        raise Sm70Error(f"{path}: unknown file type {suffix!r}; use .json (a list), .jsonl, .csv or .parquet")
    empty = True
    for row in readers[suffix](path):
        empty = False
        yield row
    if empty:
        raise Sm70Error(f"{path}: empty: no rows")


def read_json_list(path: Path) -> Iterator[RawRow]:
    """A JSON list of objects, decoded one object at a time; a syntax error stops with its line."""
    text = path.read_text(encoding="utf-8")
    decoder = json.JSONDecoder()
    pos = len(text) - len(text.lstrip())
    if pos == len(text):
        return
    if text[pos] != "[":
        raise Sm70Error(f"{path}:{text.count(chr(10), 0, pos) + 1}: expected a JSON list of objects "
                        f"(Medical Meadow layout), found {text[pos]!r}")
    pos = _BETWEEN.match(text, pos + 1).end()
    line, counted = 1, 0
    record, file = 0, str(path)
    while pos < len(text) and text[pos] != "]":
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise Sm70Error(f"{path}:{e.lineno}: not valid JSON: {e.msg}") from None
        yield RawRow(file, line, record, value)
        record += 1
        pos = _BETWEEN.match(text, end).end()
    if pos >= len(text):
        raise Sm70Error(f"{path}:{text.count(chr(10)) + 1}: not valid JSON: the list is not closed with ']'")


def read_jsonl(path: Path) -> Iterator[RawRow]:
    with open(path, encoding="utf-8") as f:
        record, file = 0, str(path)
        for line, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                yield RawRow(file, line, record, json.loads(text))
            except json.JSONDecodeError as e:
                yield RawRow(file, line, record, text.rstrip("\n"), f"not valid JSON: {e.msg}")
            record += 1


def read_csv(path: Path) -> Iterator[RawRow]:
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        start, file = 2, str(path)  # line 1 is the header
        for record, row in enumerate(reader):
            yield RawRow(file, start, record, row)
            start = reader.line_num + 1


def read_parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    record, file = 0, str(path)
    for batch in pq.ParquetFile(path).iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            yield RawRow(file, None, record, row)
            record += 1


def read_hub(hub: str, split: str) -> Iterator[RawRow]:
    import datasets

    try:
        dataset = datasets.load_dataset(hub, split=split, streaming=True)
    except Exception as e:  # the hub client raises many types; all mean "could not fetch"
        raise Sm70Error(f"hub:{hub}: could not load split {split!r}: {e}") from None
    file = f"hub:{hub}"
    for record, row in enumerate(dataset):
        yield RawRow(file, None, record, row)
