"""Every source layout reads row by row with its line or record; bad input names file, line and field."""

from __future__ import annotations

import csv
import json

import pytest

from sm70.data.build import build
from sm70.data.sources import Source, read_table, resolve_path
from sm70.errors import Sm70Error

from .helpers import DISTINCT, config, read_jsonl, rejects, write_json

ROWS = DISTINCT[:3]


def write(tmp_path, kind: str, rows=ROWS):
    path = tmp_path / f"rows.{kind}"
    if kind == "json":
        write_json(path, rows)
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif kind == "csv":
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.mark.parametrize("kind", ["json", "jsonl", "csv", "parquet"])
def test_each_table_layout_reads_every_row(tmp_path, kind):
    rows = list(read_table(write(tmp_path, kind)))
    assert [r.value for r in rows] == ROWS
    assert [r.record for r in rows] == [0, 1, 2]


@pytest.mark.parametrize("kind, lines", [("json", [2, 7, 12]), ("jsonl", [1, 2, 3]), ("csv", [2, 3, 4])])
def test_line_numbers_point_at_the_record(tmp_path, kind, lines):
    assert [r.line for r in read_table(write(tmp_path, kind))] == lines


def test_a_csv_field_with_newlines_keeps_line_numbers_right(tmp_path):
    rows = [dict(ROWS[0], output="line one\nline two"), ROWS[1]]
    assert [r.line for r in read_table(write(tmp_path, "csv", rows))] == [2, 4]


@pytest.mark.parametrize("content, expected", [
    ('[\n  {"instruction": "a", "input": "", "output": "b"},\n  {"instruction": "a" "input": ""}\n]', ":3: not valid JSON"),
    ('[{"instruction": "a", "input": "", "output": "b"}', ":1: not valid JSON: the list is not closed"),
    ('{"instruction": "a"}', ":1: expected a JSON list of objects"),
    ("", "empty: no rows"),
    ("[]", "empty: no rows"),
])
def test_broken_json_files_stop_with_file_and_line(tmp_path, content, expected):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(Sm70Error, match=expected) as e:
        list(read_table(path))
    assert str(path) in str(e.value)


# Malformed rows: (file content as JSONL lines, the field the message names, the line).
MALFORMED = [
    ('{"instruction": "a", "input": "b"}', "output: missing", 2),
    ('{"instruction": "a", "input": "b", "output": 7}', "output: expected a string, got int", 2),
    ('["a", "b", "c"]', "<row>: expected an object", 2),
    ('{"instruction": "a", "input": "b", "output": "c"', "not valid JSON", 2),
]


@pytest.mark.parametrize("line, message, lineno", MALFORMED)
def test_malformed_row_fails_with_file_line_field(tmp_path, line, message, lineno):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + line + "\n" + json.dumps(ROWS[1]) + "\n")
    cfg = config(tmp_path, [{"name": "s", "path": str(path)}])
    with pytest.raises(Sm70Error, match=message) as e:
        build(cfg)
    assert f"{path}:{lineno}:" in str(e.value)
    assert not cfg.out.exists(), "a failed build leaves no output"


@pytest.mark.parametrize("line, message, lineno", MALFORMED)
def test_malformed_row_is_rejected_with_skip(tmp_path, line, message, lineno):
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n" + line + "\n" + json.dumps(ROWS[1]) + "\n")
    out = build(config(tmp_path, [{"name": "s", "path": str(path)}], on_error="skip"))
    [reject] = rejects(out)
    assert reject["reason"] == "malformed" and reject["line"] == lineno and message.split(":")[-1].strip() in reject["detail"]
    assert len(read_jsonl(out / "train.jsonl")) == 2


def test_empty_rows_are_removed_and_counted(tmp_path):
    rows = [*ROWS, {"instruction": "Answer this question truthfully", "input": "What is X?", "output": "   "},
            {"instruction": "", "input": "", "output": "text"}]
    out = build(config(tmp_path, [{"name": "s", "path": str(write_json(tmp_path / "r.json", rows))}]))
    assert [r["reason"] for r in rejects(out)] == ["empty", "empty"]


def test_column_mapping(tmp_path):
    rows = [{"q": r["input"], "a": r["output"], "task": r["instruction"]} for r in ROWS]
    path = write_json(tmp_path / "r.json", rows)
    out = build(config(tmp_path, [{"name": "s", "path": str(path),
                                   "columns": {"instruction": "task", "input": "q", "output": "a"}}], template="plain"))
    first = read_jsonl(out / "train.jsonl")[0]
    assert first["prompt"] == f"{ROWS[0]['instruction']}\n\n{ROWS[0]['input']}"
    assert first["completion"] == " " + ROWS[0]["output"]


def test_hub_offline_says_what_to_download(monkeypatch, tmp_path):
    monkeypatch.delenv("SM70_ALLOW_HUB", raising=False)
    cfg = config(tmp_path, [{"name": "cards", "catalog": "flashcards"}])
    with pytest.raises(Sm70Error, match="medical_meadow_wikidoc_medical_flashcards.json") as e:
        Source(cfg.sources[0])
    assert "medalpaca/medical_meadow_medical_flashcards" in str(e.value) and "path:" in str(e.value)


def test_missing_file_and_unknown_sample(tmp_path):
    with pytest.raises(Sm70Error, match="file not found"):
        Source(config(tmp_path, [{"name": "s", "path": str(tmp_path / "nope.json")}]).sources[0])
    with pytest.raises(Sm70Error, match="no bundled sample"):
        resolve_path("samples://medqa/nope.jsonl")


def test_max_rows_caps_reading(tmp_path):
    out = build(config(tmp_path, [{"name": "s", "path": str(write_json(tmp_path / "r.json", DISTINCT)), "max_rows": 4}]))
    card = json.loads((out / "datacard.json").read_text())
    assert card["sources"][0]["read"] == 4 and card["totals"]["out"] == 4


SHARED = [("medical_meadow/medical_meadow_small.json", 5942), ("medical_meadow/medical_meadow_health_advice.json", 8676),
          ("medical_meadow/medical_meadow_mmmlu.json", 3787), ("medical_meadow/medical_meadow_pubmed_causal.json", 2446)]


@pytest.mark.parametrize("name, count", SHARED)
def test_real_medical_meadow_files_read(shared_data, name, count):
    rows = list(read_table(shared_data / name))
    assert len(rows) == count and set(rows[-1].value) == {"instruction", "input", "output"}


@pytest.mark.parametrize("fmt, path, count", [
    ("medqa", "medqa_usmle/phrases_no_exclude_test.jsonl", 1273),
    ("pubmedqa", "pubmedqa", 500),
    ("usmle", "usmle_self_assessment", 376),
])
def test_real_benchmark_files_read_as_sources(shared_data, tmp_path, fmt, path, count):
    split = {"pubmedqa": "test", "medqa": "test"}.get(fmt, "train")
    source = Source(config(tmp_path, [{"name": "s", "path": str(shared_data / path), "format": fmt,
                                       "split": split}]).sources[0])
    assert sum(1 for _ in source.rows()) == count


def test_hub_source_streams_when_allowed(monkeypatch, tmp_path):
    import datasets

    calls = []

    def fake_load_dataset(hub, split, streaming):
        calls.append((hub, split, streaming))
        return iter(ROWS)

    monkeypatch.setenv("SM70_ALLOW_HUB", "1")
    monkeypatch.setattr("sm70.model.load.hub_unreachable", lambda timeout=5.0: None)  # no network here
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = build(config(tmp_path, [{"name": "cards", "catalog": "flashcards"}]))
    assert calls == [("medalpaca/medical_meadow_medical_flashcards", "train", True)]
    card = json.loads((out / "datacard.json").read_text())
    assert card["sources"][0]["location"] == "hub:medalpaca/medical_meadow_medical_flashcards"
    assert card["sources"][0]["licence"].startswith("CC") and card["totals"]["out"] == 3


def test_catalog_with_local_path_reads_the_file_and_keeps_the_licence(tmp_path):
    path = write_json(tmp_path / "medical_meadow_wikidoc.json", ROWS)
    out = build(config(tmp_path, [{"name": "wikidoc", "catalog": "wikidoc", "path": str(path)}]))
    [source] = json.loads((out / "datacard.json").read_text())["sources"]
    assert source["location"] == str(path) and "CC BY-SA" in source["licence"] and source["read"] == 3
