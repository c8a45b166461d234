"""Broken source files, one table per kind of damage: the build stops with the file, line and problem
(on_error=fail), or, where the damage is one row's, rejects that row with its reason and keeps the rest
(on_error=skip). Never a traceback, never a silently missing row."""

from __future__ import annotations

import codecs
import csv
import io
import json

import pytest

from sm70 import textfile
from sm70.config import load_config
from sm70.data.build import build
from sm70.data.config import DataConfig
from sm70.errors import ConfigError, Sm70Error

from .helpers import DISTINCT, config, read_jsonl, rejects

GOOD = DISTINCT[:2]


@pytest.fixture(autouse=True)
def no_plot(monkeypatch):
    # The length histogram is ~97% of a tiny build's time and is not what these tests check.
    monkeypatch.setattr("sm70.data.build.plot_lengths", lambda lengths, cap, estimated, path: path.write_bytes(b""))


def jsonl(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def csv_bytes(rows, header=("instruction", "input", "output")) -> bytes:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(header)
    w.writerows([list(r.values()) if isinstance(r, dict) else r for r in rows])
    return out.getvalue().encode()


def parquet_bytes(rows) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), out)
    return out.getvalue()


CAFE = {"instruction": "Translate", "input": "coffee", "output": "café"}
DEEP = b'{"instruction": "a", "input": ' + b"[" * 100_000 + b"]" * 100_000 + b', "output": "b"}'
HUGE_NUMBER = b'{"instruction": "a", "input": "b", "output": ' + b"9" * 5000 + b"}"
SURROGATE = b'{"instruction": "a", "input": "b", "output": "half a pair \\udcff"}'

# Damage to the file as a whole: no row of it can be read, so both modes stop, naming the file.
# (id, file name, content, what the message says)
FILE_BROKEN = [
    ("empty-json", "s.json", b"", "empty: no rows"),
    ("empty-jsonl", "s.jsonl", b"\n\n", "empty: no rows"),
    ("empty-csv", "s.csv", b"", "empty: no rows"),
    ("header-only-csv", "s.csv", b"instruction,input,output\n", "empty: no rows"),
    ("empty-parquet", "s.parquet", b"", "not a readable Parquet file"),
    ("truncated-json", "s.json", json.dumps(GOOD).encode()[:-30], "not valid JSON"),
    ("truncated-parquet", "s.parquet", parquet_bytes(GOOD)[:-40], "not a readable Parquet file"),
    ("binary-jsonl", "s.jsonl", b"\x00\x01\x02\x03garbage\n\xff\xfe", "binary file"),
    ("binary-json", "s.json", bytes(range(256)) * 4, "binary file"),
    ("zip-as-csv", "s.csv", b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 40, "ZIP archive"),
    ("gzip-as-jsonl", "s.jsonl", b"\x1f\x8b\x08\x00" + b"\x00" * 20, "gzip"),
    ("parquet-as-json", "s.json", parquet_bytes(GOOD), "Parquet file"),
    ("json-as-parquet", "s.parquet", json.dumps(GOOD).encode(), "not a readable Parquet file"),
    # Found by fuzzing: pyarrow raised UnicodeDecodeError for a column name that is not UTF-8.
    ("parquet-undecodable-column", "s.parquet", parquet_bytes(GOOD).replace(b"input", b"inp\x8ct"),
     "not a readable Parquet file"),
    ("utf16-json", "s.json", json.dumps(GOOD, ensure_ascii=False).encode("utf-16"), "UTF-16 byte-order mark"),
    ("utf16-csv", "s.csv", csv_bytes(GOOD).decode().encode("utf-16"), "UTF-16 byte-order mark"),
    ("utf16-no-bom", "s.jsonl", jsonl(*GOOD).decode().encode("utf-16-le"), "NUL byte"),
    ("utf32-jsonl", "s.jsonl", jsonl(*GOOD).decode().encode("utf-32"), "UTF-32 byte-order mark"),
    ("not-a-list", "s.json", b'{"instruction": "a", "input": "", "output": "b"}', "expected a JSON list"),
    ("deep-json-list", "s.json", b"[" + DEEP + b"]", "nested too deeply"),
    ("huge-number-in-list", "s.json", b"[" + HUGE_NUMBER + b"]", "4,300 digits"),
    ("cp1252-outside-string", "s.json", b'[{"instruction": "a", "input": "b", "output": "c"}\xe9]', "byte 50"),
    ("csv-duplicate-header", "s.csv", b"instruction,input,output,output\na,b,c,d\n", "'output' appears twice"),
    ("csv-undecodable-header", "s.csv", b"instruction,inp\xfct,output\na,b,c\n", "header: not valid UTF-8"),
    ("unknown-suffix", "s.xlsx", b"PK\x03\x04", "unknown file type '.xlsx'"),
]


def write(tmp_path, name: str, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("on_error", ["fail", "skip"])
@pytest.mark.parametrize("name, content, problem", [c[1:] for c in FILE_BROKEN], ids=[c[0] for c in FILE_BROKEN])
def test_a_broken_file_stops_the_build_naming_it(tmp_path, name, content, problem, on_error):
    path = write(tmp_path, name, content)
    cfg = config(tmp_path, [{"name": "s", "path": str(path)}], on_error=on_error)
    with pytest.raises(Sm70Error, match=problem.replace("(", r"\(")) as e:
        build(cfg)
    assert str(path) in str(e.value)
    assert not cfg.out.exists(), "a failed build leaves no output"


# Damage to one row: `on_error=fail` stops at it with file:line, `skip` rejects it and keeps the others.
# (id, file name, content with GOOD[0] first and GOOD[1] last, line of the bad row, what the message says)
ROW_BROKEN = [
    ("cp1252-jsonl", "s.jsonl", jsonl(GOOD[0], json.dumps(CAFE, ensure_ascii=False).encode("cp1252"), GOOD[1]), 2,
     "not valid UTF-8 at byte"),
    ("cp1252-json", "s.json", b"[\n" + json.dumps(GOOD[0]).encode() + b",\n" +
     json.dumps(CAFE, ensure_ascii=False).encode("cp1252") + b",\n" + json.dumps(GOOD[1]).encode() + b"\n]", 3,
     "not valid UTF-8 at byte"),
    ("cp1252-csv", "s.csv", csv_bytes([GOOD[0], CAFE]).decode().encode("cp1252") + csv_bytes([GOOD[1]]).split(b"\n", 1)[1],
     3, "not valid UTF-8 at byte"),
    ("truncated-jsonl", "s.jsonl", jsonl(GOOD[0], b'{"instruction": "a", "inp', GOOD[1]), 2, "not valid JSON"),
    ("wrong-type", "s.jsonl", jsonl(GOOD[0], {"instruction": "a", "input": "b", "output": 7}, GOOD[1]), 2,
     "output: expected a string, got int"),
    ("missing-field", "s.jsonl", jsonl(GOOD[0], {"instruction": "a", "input": "b"}, GOOD[1]), 2, "output: missing"),
    ("not-an-object", "s.jsonl", jsonl(GOOD[0], [1, 2, 3], GOOD[1]), 2, "<row>: expected an object"),
    ("null-row", "s.json", json.dumps([GOOD[0], None, GOOD[1]], indent=1).encode(), 7, "<row>: expected an object"),
    ("huge-number", "s.jsonl", jsonl(GOOD[0], HUGE_NUMBER, GOOD[1]), 2, "4,300 digits"),
    ("deep-nesting", "s.jsonl", jsonl(GOOD[0], DEEP, GOOD[1]), 2, "nested too deeply"),
    ("unpaired-surrogate", "s.jsonl", jsonl(GOOD[0], SURROGATE, GOOD[1]), 2, "unpaired UTF-16 surrogate"),
    ("binary-line", "s.jsonl", jsonl(GOOD[0], b"\xff\xd8\xff\xe0 a JPEG line", GOOD[1]), 2, "found ff d8 ff"),
    ("csv-missing-field", "s.csv", csv_bytes([GOOD[0], ["a", "b"], GOOD[1]]), 3, "2 fields, but the header has 3"),
    ("csv-stray-cr", "s.csv", csv_bytes([GOOD[0]]) + b"a,b\rc,d\n" + csv_bytes([GOOD[1]]).split(b"\n", 1)[1], 3,
     "not valid CSV: new-line character seen in unquoted field"),
    ("csv-field-past-limit", "s.csv", csv_bytes([GOOD[0], ["a", "b", "x" * 200_000], GOOD[1]]), 3,
     "not valid CSV: field larger than field limit"),
    ("csv-extra-field", "s.csv", csv_bytes([GOOD[0], ["a", "b", "c", "d"], GOOD[1]]), 3, "4 fields, but the header has 3"),
    ("parquet-wrong-type", "s.parquet", parquet_bytes([{**GOOD[0], "output": None},
                                                       {**GOOD[1], "output": None}, {**GOOD[1], "output": "x"}]),
     None, "output: expected a string, got NoneType"),
]


def _ids(cases):
    return [c[0] for c in cases]


@pytest.mark.parametrize("name, content, line, problem", [c[1:] for c in ROW_BROKEN], ids=_ids(ROW_BROKEN))
def test_a_broken_row_stops_a_strict_build_at_its_line(tmp_path, name, content, line, problem):
    path = write(tmp_path, name, content)
    cfg = config(tmp_path, [{"name": "s", "path": str(path)}])
    with pytest.raises(Sm70Error, match=problem.replace("(", r"\(")) as e:
        build(cfg)
    assert (f"{path}:{line}:" if line else f"{path}: record 0:") in str(e.value)
    assert not cfg.out.exists()


@pytest.mark.parametrize("name, content, line, problem", [c[1:] for c in ROW_BROKEN], ids=_ids(ROW_BROKEN))
def test_a_broken_row_is_a_reject_with_skip(tmp_path, name, content, line, problem):
    path = write(tmp_path, name, content)
    out = build(config(tmp_path, [{"name": "s", "path": str(path)}], on_error="skip"))
    malformed = [r for r in rejects(out) if r["reason"] == "malformed"]
    assert malformed and all(problem in r["detail"] for r in malformed)
    if line:
        assert [r["line"] for r in malformed] == [line]
    card = json.loads((out / "datacard.json").read_text())
    kept = read_jsonl(out / "train.jsonl")
    assert card["totals"]["read"] == len(kept) + len(rejects(out)), "every row read is kept or rejected"
    assert kept, "the good rows around the bad one are kept"


def test_a_line_past_the_limit_is_a_reject_not_a_memory_blowup(tmp_path, monkeypatch):
    monkeypatch.setattr(textfile, "LINE_LIMIT", 1000)
    path = write(tmp_path, "s.jsonl", jsonl(GOOD[0], {"instruction": "a", "input": "b", "output": "x" * 5000}, GOOD[1]))
    out = build(config(tmp_path, [{"name": "s", "path": str(path)}], on_error="skip"))
    [reject] = rejects(out)
    assert reject["line"] == 2 and "longer than the 1,000-byte limit" in reject["detail"]
    assert len(read_jsonl(out / "train.jsonl")) == 2


def test_a_file_past_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(textfile, "WHOLE_FILE_LIMIT", 100)
    path = write(tmp_path, "s.json", json.dumps(GOOD).encode())
    with pytest.raises(Sm70Error, match=f"{path}: larger than the 100-byte limit"):
        build(config(tmp_path, [{"name": "s", "path": str(path)}], on_error="skip"))


def test_a_utf8_bom_is_accepted(tmp_path):
    for name, content in [("s.json", json.dumps(GOOD).encode()), ("s.jsonl", jsonl(*GOOD)), ("s.csv", csv_bytes(GOOD))]:
        path = write(tmp_path, name, codecs.BOM_UTF8 + content)
        out = build(config(tmp_path, [{"name": "s", "path": str(path)}], out=str(tmp_path / f"out-{name}")))
        assert len(read_jsonl(out / "train.jsonl")) == 2 and not rejects(out), name


@pytest.mark.parametrize("encoding, name", [("cp1252", "s.jsonl"), ("cp1252", "s.csv"), ("utf-16", "s.json"),
                                            ("utf-16", "s.jsonl"), ("latin-1", "s.json")])
def test_the_encoding_setting_reads_other_encodings(tmp_path, encoding, name):
    rows = [GOOD[0], CAFE]
    text = {"s.json": json.dumps(rows, ensure_ascii=False), "s.jsonl": jsonl(*[json.dumps(r, ensure_ascii=False).encode()
                                                                            for r in rows]).decode(),
            "s.csv": csv_bytes(rows).decode()}[name]
    path = write(tmp_path, name, text.encode(encoding))
    out = build(config(tmp_path, [{"name": "s", "path": str(path), "encoding": encoding}], template="plain"))
    assert [r["completion"] for r in read_jsonl(out / "train.jsonl")] == [" " + GOOD[0]["output"], " café"]


def test_a_wrong_encoding_setting_is_an_error_naming_the_line(tmp_path):
    # 0x81 is one of the five bytes Windows-1252 leaves undefined.
    path = write(tmp_path, "s.jsonl", jsonl(GOOD[0], b'{"instruction": "a", "input": "b", "output": "\x81"}', GOOD[1]))
    with pytest.raises(Sm70Error, match=f"{path}:2: not valid cp1252 at byte"):
        build(config(tmp_path, [{"name": "s", "path": str(path), "encoding": "cp1252"}]))
    out = build(config(tmp_path, [{"name": "s", "path": str(path), "encoding": "cp1252"}], on_error="skip"))
    assert [r["line"] for r in rejects(out)] == [2]


@pytest.mark.parametrize("source, message", [
    ({"encoding": "klingon"}, "unknown encoding 'klingon'"),
    ({"encoding": "cp1252", "format": "medqa"}, "encoding applies to alpaca tables"),
])
def test_bad_encoding_settings(tmp_path, source, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DataConfig, None, [], out=str(tmp_path / "o"), sources=[{"name": "s", "path": "x", **source}])


@pytest.mark.parametrize("columns, problem", [
    ({"output": "answer"}, "answer: missing"),
    ({"instruction": "task", "output": "a"}, "task: missing"),
])
def test_a_column_mapping_to_a_missing_column_names_it(tmp_path, columns, problem):
    path = write(tmp_path, "s.jsonl", jsonl({"instruction": "x", "input": "y", "a": "z"}))
    with pytest.raises(Sm70Error, match=f"{path}:1: {problem}"):
        build(config(tmp_path, [{"name": "s", "path": str(path), "columns": columns}]))


def test_a_folder_or_a_fifo_is_not_a_table(tmp_path):
    import os

    (tmp_path / "folder").mkdir()
    with pytest.raises(Sm70Error, match="is a folder"):
        build(config(tmp_path, [{"name": "s", "path": str(tmp_path / "folder")}]))
    os.mkfifo(tmp_path / "pipe.jsonl")  # reading it would block forever
    with pytest.raises(Sm70Error, match="pipe.jsonl: is not a regular file"):
        build(config(tmp_path, [{"name": "s", "path": str(tmp_path / "pipe.jsonl")}]))


def test_an_unreadable_path_says_why(tmp_path):
    write(tmp_path, "file", b"")
    path = tmp_path / "file" / "s.jsonl"  # root reads past permissions, but not through a file
    with pytest.raises(Sm70Error, match="s.jsonl: cannot read: Not a directory"):
        list(textfile.lines(path))


@pytest.mark.parametrize("fmt, files, problem", [
    ("medqa", {"test.jsonl": b'{"question": "Q", "options": {"A": "a"}, "answer_idx": "B"}\n'}, "answer_idx"),
    ("medqa", {"test.jsonl": b"\xff\xfe{\x00"}, "UTF-16"),
    ("pubmedqa", {"ori_pqal.json": b'{"1": {}}', "test_ground_truth.json": b'{"2": "yes"}'}, "PMID 2: not in"),
    ("usmle", {"step1.json": b"[]", "step1_solutions.json": b"{}"}, "no questions"),
])
def test_broken_benchmark_files_as_sources(tmp_path, fmt, files, problem):
    for name, content in files.items():
        write(tmp_path, name, content)
    with pytest.raises(Sm70Error, match=problem):
        build(config(tmp_path, [{"name": "s", "path": str(tmp_path), "format": fmt, "split": "test"}], on_error="skip"))


@pytest.mark.parametrize("override, key", [
    ("target_rows=1000000000000", "target_rows"),     # would write 10^12 rows
    ("sources.0.weight=1e9", "sources.0.weight"),      # a billion copies of each row
    ("dedup.num_perm=1000000000", "dedup.num_perm"),   # gigabytes per row
    ("workers=1000000", "workers"),                    # a million processes
    ("seed=-1", "seed"),                               # numpy refuses negative seeds mid-build
    ("max_tokens=0", "max_tokens"),
    ("sources.0.columns.output=", "sources.0.columns.output"),
    ("sources.0.max_rows=-5", "sources.0.max_rows"),
])
def test_absurd_recipe_values_are_refused_up_front(tmp_path, override, key):
    with pytest.raises(ConfigError, match=f"key '{key}'"):
        load_config(DataConfig, None, [override], out=str(tmp_path / "o"), sources=[{"name": "s", "path": "x"}])


def test_an_over_long_line_that_does_not_decode_is_one_reject(tmp_path, monkeypatch):
    monkeypatch.setattr(textfile, "LINE_LIMIT", 1000)
    long_bad = b'{"instruction": "a", "input": "b", "output": "' + b"\xe9" * 3000 + b'"}'
    path = write(tmp_path, "s.jsonl", jsonl(GOOD[0], long_bad, GOOD[1]))
    out = build(config(tmp_path, [{"name": "s", "path": str(path)}], on_error="skip"))
    assert [(r["line"], "longer than" in r["detail"]) for r in rejects(out)] == [(2, True)]
    assert len(read_jsonl(out / "train.jsonl")) == 2
