"""Reading sources as a stream of raw rows, each with the file and the line or record it came from.

Local JSON (a list of objects, the Medical Meadow layout), JSONL, CSV and Parquet are read row by
row; a JSON list is decoded one object at a time from the file text, so the parsed rows are never
all in memory. Benchmark formats (medqa, pubmedqa, usmle) are read by `sm70.eval.tasks`, the one
parser per format that the evaluation stage uses too. Hub ids are fetched only when the operator
allows the network (`SM70_ALLOW_HUB=1`); offline, the error says which file to download and where.

Text is decoded by `sm70.textfile` (UTF-8, or the source's `encoding:`). Damage confined to a row (a
byte that is not UTF-8, a cut-off line, a field count that differs from the header) comes back as
a row with `error` set, which the build stops at or rejects (`on_error`); damage to the file as a
whole (binary, truncated Parquet, an unclosed JSON list) raises at once.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from sm70.data.catalog import subset
from sm70.data.config import SourceConfig
from sm70 import textfile
from sm70.errors import Sm70Error
from sm70.textfile import InputError, where

SAMPLES = "samples://"
TASK_OF_FORMAT = {"medqa": "medqa", "pubmedqa": "pubmedqa", "usmle": "usmle"}
_BETWEEN = re.compile(r"[\s,]*")  # whitespace and the comma between two objects of a JSON list
_SPACE = re.compile(r"\s*")


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
            yield from read_table(self.path, self.cfg.encoding)

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


def read_table(path: Path, encoding: str = textfile.UTF8) -> Iterator[RawRow]:
    if path.is_dir():
        raise InputError(str(path), "is a folder; an alpaca source reads one .json, .jsonl, .csv or .parquet file")
    suffix = path.suffix.lower()
    readers = {".json": read_json_list, ".jsonl": read_jsonl, ".csv": read_csv, ".parquet": read_parquet}
    if suffix not in readers:
        raise InputError(str(path), f"unknown file type {suffix!r}; use .json (a list), .jsonl, .csv or .parquet")
    empty = True
    for row in readers[suffix](path, encoding):
        empty = False
        yield row
    if empty:
        raise InputError(str(path), "empty: no rows")


def read_json_list(path: Path, encoding: str = textfile.UTF8) -> Iterator[RawRow]:
    """A JSON list of objects, decoded one object at a time; a syntax error stops with its line.

    Bytes that are not UTF-8 make only the records that hold them malformed: the text is kept with
    those bytes escaped, and each such record comes back with the decode problem as its error.
    """
    data = textfile.read_bytes(path)
    offsets = None
    try:
        text = textfile.decode(path, data, encoding, setting=True)
    except textfile.DecodeError:
        if not textfile.is_utf8(encoding):
            raise
        bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
        text = str(memoryview(data)[bom:], textfile.UTF8, "surrogateescape")
        offsets = textfile.ByteOffsets(text, bom)
    del data
    decoder = json.JSONDecoder()
    pos = _SPACE.match(text).end()  # not text.lstrip(): that would copy a file of gigabytes
    if pos == len(text):
        return
    if text[pos] != "[":
        raise InputError(where(path, text.count(chr(10), 0, pos) + 1), "expected a JSON list of objects "
                         f"(Medical Meadow layout), found {text[pos]!r}")
    pos = _BETWEEN.match(text, pos + 1).end()
    line, counted = 1, 0
    record, file = 0, str(path)
    while pos < len(text) and text[pos] != "]":
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            value, end = textfile.raw_decode(decoder, text, pos)
        except json.JSONDecodeError as e:
            # An undecodable byte outside a string breaks the syntax: that byte is the problem to report.
            problem = offsets and textfile.escaped_problem(text, pos, e.pos + 1, offsets, True)
            raise InputError(where(path, e.lineno), problem or textfile.json_problem(e)) from None
        except ValueError as e:  # no position: the record's first line
            raise InputError(where(path, line), str(e)) from None
        problem = offsets and textfile.escaped_problem(text, pos, end, offsets, True)
        if problem:
            raw = text[pos:end].encode(textfile.UTF8, "surrogateescape").decode(textfile.UTF8, "backslashreplace")
            yield RawRow(file, line, record, raw, problem)
        else:
            yield RawRow(file, line, record, value)
        record += 1
        pos = _BETWEEN.match(text, end).end()
    if pos >= len(text):
        raise InputError(where(path, text.count(chr(10)) + 1), "not valid JSON: the list is not closed with ']'")


def read_jsonl(path: Path, encoding: str = textfile.UTF8) -> Iterator[RawRow]:
    record, file, loads = 0, str(path), json.loads
    for number, text, error in textfile.lines(path, encoding, setting=True):
        if error:
            yield RawRow(file, number, record, text.rstrip("\n"), error)
        elif text.isspace():
            continue
        else:
            try:
                yield RawRow(file, number, record, loads(text))
            except (ValueError, RecursionError) as e:  # bad syntax, nesting deeper than Python recurses, ...
                yield RawRow(file, number, record, text.rstrip("\n"), textfile.json_problem(textfile.readable(e)))
        record += 1


def read_csv(path: Path, encoding: str = textfile.UTF8) -> Iterator[RawRow]:
    """Rows of a CSV file with a header line. A row is malformed when its lines do not decode, csv
    cannot parse it (a field past csv's 128 KiB limit, a stray carriage return), or its field count
    differs from the header's (csv.DictReader would drop or invent fields silently)."""
    file = str(path)
    unreadable: dict[int, str] = {}  # line number -> why it could not be decoded
    pending: list[str] = []          # the lines of the row being parsed, for its reject

    def texts() -> Iterator[str]:
        for line in textfile.lines(path, encoding, setting=True):
            if line.error:
                unreadable[line.number] = line.error
            pending.append(line.text)
            yield line.text

    reader = csv.reader(texts())
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise InputError(where(path, 1), f"not valid CSV: {e}", "header") from None
    if header is None:
        return
    if unreadable and min(unreadable) <= reader.line_num:
        raise InputError(where(path, 1), unreadable[min(unreadable)], "header")
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise InputError(where(path, 1), f"column {repeated[0]!r} appears twice", "header")
    pending.clear()
    start, record = reader.line_num + 1, 0
    while True:
        problem = None
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:  # the reader starts afresh on the next line
            fields, problem = [], f"not valid CSV: {e}"
        end = reader.line_num
        if unreadable:
            problems = [unreadable.pop(n) for n in range(start, end + 1) if n in unreadable]
            problem = problems[0] if problems else problem
        text = "".join(pending).rstrip("\r\n")
        pending.clear()
        if problem:
            yield RawRow(file, start, record, text, problem)
        elif not fields:  # a blank line is not a row
            start = end + 1
            continue
        elif len(fields) != len(header):
            yield RawRow(file, start, record, text, f"{len(fields)} fields, but the header has {len(header)}")
        else:
            yield RawRow(file, start, record, dict(zip(header, fields)))
        record += 1
        start = end + 1


def read_parquet(path: Path, encoding: str | None = None) -> Iterator[RawRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    textfile.open_binary(path).close()  # not found, a folder, no permission: the same errors as every file
    record, file = 0, str(path)
    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise InputError(file, f"column {repeated[0]!r} appears twice")
        for batch in parquet.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                yield RawRow(file, None, record, row)
                record += 1
    except (pa.ArrowException, OSError, ValueError) as e:  # truncated, not Parquet, a corrupt page or name
        raise InputError(where(path, record=record) if record else file, f"not a readable Parquet file: {e}") from None


def read_hub(hub: str, split: str) -> Iterator[RawRow]:
    import datasets

    try:
        dataset = datasets.load_dataset(hub, split=split, streaming=True)
    except Exception as e:  # the hub client raises many types; all mean "could not fetch"
        raise Sm70Error(f"hub:{hub}: could not load split {split!r}: {e}") from None
    file = f"hub:{hub}"
    for record, row in enumerate(dataset):
        yield RawRow(file, None, record, row)
