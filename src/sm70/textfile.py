"""Reading the files people hand us: one decoder, bounded memory, one error shape.

Every file sm70 reads as text comes through here. UTF-8 is the format, and a UTF-8 byte-order
mark is accepted and dropped (Excel and Notepad write one). Anything else fails with the file,
the byte offset, what was found there and how to fix it, never with Python's `UnicodeDecodeError`,
and never by decoding leniently: a Windows-1252 export read that way would train the model on
"cafÃ©". A data source that cannot be re-encoded may name its encoding (`encoding: cp1252`).

Memory is bounded where a broken or hostile file could exhaust it: a whole-file read stops at
`WHOLE_FILE_LIMIT` bytes and a line read at `LINE_LIMIT` (a file with no newline is one line).

Errors read `file:line: field: problem` (or `file: record N: ...` where the format has no lines).
"""

from __future__ import annotations

import codecs
import io
import json
import re
import stat
from pathlib import Path
from typing import IO, Any, Iterator, NamedTuple

from sm70.errors import Sm70Error

WHOLE_FILE_LIMIT = 4 << 30  # the largest Medical Meadow file (CORD-19) is well under this
LINE_LIMIT = 64 << 20       # a JSONL row or CSV line; real rows are a few KiB
SNIFF_BYTES = 8192          # how much of the start is checked for a binary file, as git and grep do
UTF8 = "utf-8"

# What a file that is not text usually is, by its first bytes: the user learns what they pointed at.
MAGIC = ((b"PK\x03\x04", "a ZIP archive (an .xlsx or .docx file is one)"), (b"\x1f\x8b", "a gzip file"),
         (b"PAR1", "a Parquet file (name it .parquet)"), (b"%PDF", "a PDF"), (b"GGUF", "a GGUF model file"),
         (b"\xd0\xcf\x11\xe0", "an old Office file (.xls/.doc)"), (b"SQLite format 3", "an SQLite database"))
BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
        (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))
_ESCAPED = re.compile("[\udc80-\udcff]+")  # bytes that were not UTF-8, as `surrogateescape` keeps them


class InputError(Sm70Error):
    """A file whose content is wrong. `where` is `file:line` or `file: record N`."""

    def __init__(self, where: str, problem: str, field: str | None = None):
        self.where, self.field, self.problem = where, field, problem
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")


class DecodeError(InputError):
    """Bytes that are not the file's encoding (the reader of a table may make it a row's reject instead)."""


def where(file: str | Path, line: int | None = None, record: int | str | None = None) -> str:
    if line is not None:
        return f"{file}:{line}"
    if record is not None:
        return f"{file}: record {record}" if isinstance(record, int) else f"{file}: {record}"
    return str(file)


def is_utf8(encoding: str) -> bool:
    return codecs.lookup(encoding).name in ("utf-8", "utf-8-sig")


def open_binary(path: str | Path) -> IO[bytes]:
    """Open a regular file for reading; a folder, a device, a FIFO or an unreadable file is an InputError."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
        if stat.S_ISDIR(mode):
            raise InputError(str(path), "is a folder, expected a file")
        if not stat.S_ISREG(mode):  # reading a FIFO or /dev/zero would block or never end
            raise InputError(str(path), "is not a regular file")
        return open(path, "rb")
    except FileNotFoundError:
        raise InputError(str(path), "file not found") from None
    except OSError as e:
        raise InputError(str(path), f"cannot read: {e.strerror or e}") from None


def sniff(path: str | Path, head: bytes) -> int:
    """How many bytes of byte-order mark to skip; a file that is not UTF-8 text raises InputError."""
    if head.startswith(codecs.BOM_UTF8):
        return len(codecs.BOM_UTF8)
    for bom, name in BOMS:
        if head.startswith(bom):
            raise InputError(str(path), f"byte 0: found a {name} byte-order mark ({bom.hex(' ')}): the file is {name} "
                             f"(a spreadsheet export?), not UTF-8; re-encode it as UTF-8, e.g. "
                             f"`iconv -f {name} -t UTF-8 {path} > {Path(path).stem}.utf8{Path(path).suffix}`")
    for magic, name in MAGIC:
        if head.startswith(magic):
            raise InputError(str(path), f"byte 0: found {head[:len(magic)]!r}: this is {name}, not UTF-8 text")
    nul = head.find(b"\0")
    if nul >= 0:
        raise InputError(str(path), f"byte {nul}: found a NUL byte: this is a binary file (or UTF-16 without a "
                         "byte-order mark), not UTF-8 text")
    return 0


def decode_problem(raw: bytes, start: int, offset: int, setting: bool = False) -> str:
    """The message for bytes that are not UTF-8: where (absolute byte offset), what, and the fix.

    `raw[start:]` begins with the bad bytes; `offset` is where `raw` starts in the file; `setting`
    says the reader has an `encoding:` setting to offer as the other fix.
    """
    found = raw[start:start + 4]
    bad = bytes(b for b in found if b >= 0x80) or found[:1]
    cp1252 = bad.decode("cp1252", "replace")
    fix = "re-encode the file as UTF-8 (e.g. `iconv -f WINDOWS-1252 -t UTF-8`)"
    if setting:
        fix += " or set `encoding:` on the source (e.g. `encoding: cp1252`)"
    return (f"not valid UTF-8 at byte {offset + start} (found {bad.hex(' ')}; in Windows-1252 that reads "
            f"{cp1252!r}): {fix}")


def read_bytes(path: str | Path, limit: int | None = None) -> bytes:
    """The whole file, at most `limit` bytes (default WHOLE_FILE_LIMIT)."""
    limit = WHOLE_FILE_LIMIT if limit is None else limit
    with open_binary(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise InputError(str(path), f"larger than the {limit:,}-byte limit for a file read whole")
    return data


def decode(path: str | Path, data: bytes, encoding: str = UTF8, setting: bool = False) -> str:
    """`data` (a whole file) as text; bytes that are not `encoding` are an InputError naming line and byte."""
    if not is_utf8(encoding):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError as e:
            raise DecodeError(where(path, data.count(b"\n", 0, e.start) + 1), f"not valid {encoding} at byte "
                             f"{e.start} (found {data[e.start:e.end].hex(' ')})") from None
    start = sniff(path, data[:SNIFF_BYTES])
    try:
        return str(memoryview(data)[start:], UTF8)  # a view: a 4 GB file is not copied to drop its mark
    except UnicodeDecodeError as e:
        at = start + e.start
        raise DecodeError(where(path, data.count(b"\n", 0, at) + 1), decode_problem(data, at, 0, setting)) from None


def read_text(path: str | Path, limit: int | None = None, encoding: str = UTF8, setting: bool = False) -> str:
    return decode(path, read_bytes(path, limit), encoding, setting)


def parse_json(text: str, unique_keys: bool = False) -> Any:
    """json.loads whose every failure is a ValueError with a message a user can act on.

    `unique_keys`: a key given twice is an error instead of the last copy silently winning, which
    in a benchmark file would drop an item (PubMedQA's records are keyed by PMID).
    """
    try:
        return json.loads(text, object_pairs_hook=_unique if unique_keys else None)
    except (ValueError, RecursionError) as e:
        raise readable(e) from None


def raw_decode(decoder: json.JSONDecoder, text: str, pos: int) -> tuple[Any, int]:
    """decoder.raw_decode with parse_json's errors."""
    try:
        return decoder.raw_decode(text, pos)
    except (ValueError, RecursionError) as e:
        raise readable(e) from None


def readable(e: ValueError | RecursionError) -> ValueError:
    """json's failure as a ValueError whose message a user can act on."""
    if isinstance(e, json.JSONDecodeError):
        return e
    if isinstance(e, RecursionError):
        return ValueError("JSON nested too deeply to read")
    if "digits" in str(e):  # Python refuses to convert integers of over 4,300 digits
        return ValueError("a number with more than 4,300 digits")
    return e


def _unique(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) < len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {dup!r} appears twice in one object (the last copy would silently win)")
    return obj


def json_problem(e: ValueError) -> str:
    return f"not valid JSON: {e.msg}" if isinstance(e, json.JSONDecodeError) else str(e)


def read_json(path: str | Path, limit: int | None = None, unique_keys: bool = True) -> Any:
    """A whole JSON document; every failure is an InputError naming the file and, for syntax, the line."""
    text = read_text(path, limit)
    try:
        return parse_json(text, unique_keys)
    except json.JSONDecodeError as e:
        raise InputError(where(path, e.lineno), json_problem(e)) from None
    except ValueError as e:  # a duplicate key, a 5,000-digit number, nesting deeper than Python recurses
        raise InputError(str(path), json_problem(e)) from None


class Line(NamedTuple):
    number: int         # 1-based
    text: str           # decoded; for a line that could not be read, its bytes with \\x escapes
    error: str | None   # why the line could not be read (not UTF-8, too long)


def lines(path: str | Path, encoding: str = UTF8, setting: bool = False) -> Iterator[Line]:
    """Every line of a text file, decoded one at a time, so a bad line is a row-level problem.

    A line that is not `encoding`, or longer than LINE_LIMIT, comes back with `error` set and the
    reading goes on: the caller decides whether that stops it or becomes a reject.
    """
    f = open_binary(path)
    with f:
        if b"\n".decode(encoding, "ignore") != "\n" or "\n".encode(encoding) != b"\n":  # UTF-16, UTF-32
            yield from _wide_lines(path, f, encoding)
            return
        utf8 = is_utf8(encoding)
        offset = sniff(path, f.read(SNIFF_BYTES)) if utf8 else 0
        f.seek(offset)
        codec = UTF8 if utf8 else encoding
        limit, number = LINE_LIMIT, 0
        readline = f.readline
        while raw := readline(limit + 1):
            number += 1
            if len(raw) > limit and not raw.endswith(b"\n"):
                size = len(raw) + _skip_line(f)
                yield Line(number, raw[:80].decode(codec, "backslashreplace") + "...",
                           f"line longer than the {limit:,}-byte limit ({size:,} bytes)")
                offset += size
                continue
            try:
                text = raw.decode(codec)
            except UnicodeDecodeError as e:
                problem = (decode_problem(raw, e.start, offset, setting) if utf8 else
                           f"not valid {encoding} at byte {offset + e.start} (found {raw[e.start:e.end].hex(' ')})")
                yield Line(number, raw.decode(codec, "backslashreplace"), problem)
            else:
                yield Line(number, text, None)
            offset += len(raw)


def _skip_line(f: IO[bytes]) -> int:
    skipped = 0
    while chunk := f.readline(1 << 20):
        skipped += len(chunk)
        if chunk.endswith(b"\n"):
            break
    return skipped


def _wide_lines(path: str | Path, f: IO[bytes], encoding: str) -> Iterator[Line]:
    # UTF-16 and UTF-32, named by the operator: a newline is not one byte, so decode as a stream,
    # still strictly and with a bounded line; an error can only be placed after the last whole line.
    text = io.TextIOWrapper(f, encoding=encoding, errors="strict", newline="")
    number = 0
    try:
        while line := text.readline(LINE_LIMIT + 1):
            number += 1
            if len(line) > LINE_LIMIT and not line.endswith("\n"):
                raise InputError(where(path, number), f"line longer than the {LINE_LIMIT:,}-character limit")
            yield Line(number, line, None)
    except UnicodeDecodeError as e:
        raise DecodeError(str(path), f"not valid {encoding} after line {number} "
                          f"(found {e.object[e.start:e.end].hex(' ')})") from None
    finally:
        text.detach()


def escaped_problem(text: str, start: int, end: int, offsets: "ByteOffsets", setting: bool) -> str | None:
    """For text decoded with `surrogateescape`: the decode problem in text[start:end], or None."""
    m = _ESCAPED.search(text, start, end)
    if m is None:
        return None
    raw = m.group(0).encode(UTF8, "surrogateescape")
    return decode_problem(raw, 0, offsets.at(m.start()), setting)


class ByteOffsets:
    """Character index -> byte offset in a surrogate-escaped text, for indexes that only increase."""

    def __init__(self, text: str, base: int = 0):
        self.text, self.char, self.byte = text, 0, base

    def at(self, index: int) -> int:
        self.byte += len(self.text[self.char:index].encode(UTF8, "surrogateescape"))
        self.char = index
        return self.byte
