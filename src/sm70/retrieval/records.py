"""JSON Lines and JSON files of records, each record one unit (a short record is one chunk).

Layouts read:
- JSON Lines or a JSON list of `{"id", "title", "text"}` (`id` and `title` optional);
- a JSON list of Alpaca rows `{"instruction", "input", "output"}` (Medical Meadow): the three, in order;
- PubMedQA's `ori_pqal.json`, an object PMID -> record: the abstract's sections (CONTEXTS), id = PMID.
  The question is left out: it is what a reader asks, and the conclusion (LONG_ANSWER) too, as the
  issue's BM25 anchor does.
"""

from __future__ import annotations

from pathlib import Path

from sm70 import textfile
from sm70.retrieval.documents import Document, Unit, Unreadable


def _unit(row: dict, where: str, default_id: str) -> Unit | None:
    text, title, rid = row.get("text"), row.get("title"), row.get("id", default_id)
    if not isinstance(text, str):
        raise Unreadable(f"{where}: text: expected a string, got {type(text).__name__}"
                         if "text" in row else f"{where}: text: missing (records are {{id, title, text}})")
    if title is not None and not isinstance(title, str):
        raise Unreadable(f"{where}: title: expected a string, got {type(title).__name__}")
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise Unreadable(f"{where}: id: expected a string or an integer, got {type(rid).__name__}")
    if not text.strip():
        return None
    return Unit(text, location=f"record {rid}", title=title or None, record=str(rid))


def _document(path: Path, units: list[Unit | None]) -> Document:
    kept = [u for u in units if u is not None]
    if not kept:
        raise Unreadable("empty: no record with text" if units else "empty: no records")
    return Document(path.stem, kept, empty_records=len(units) - len(kept))


def read_jsonl(path: Path) -> Document:
    units = []
    for number, line, error in textfile.lines(path):
        if error:
            raise Unreadable(f"line {number}: {error}")
        if not line.strip():
            continue
        try:
            row = textfile.parse_json(line)
        except ValueError as e:
            raise Unreadable(f"line {number}: {textfile.json_problem(e)}") from None
        if not isinstance(row, dict):
            raise Unreadable(f"line {number}: expected a JSON object, got {type(row).__name__}")
        units.append(_unit(row, f"line {number}", str(number)))
    return _document(path, units)


def _alpaca(row: dict) -> dict:
    parts = [row.get("instruction"), row.get("input"), row.get("output")]
    return {"text": "\n\n".join(p.strip() for p in parts if isinstance(p, str) and p.strip())}


def read_json(path: Path) -> Document:
    try:
        data = textfile.read_json(path, unique_keys=False)
    except textfile.InputError as e:
        raise Unreadable(e.problem if e.where == str(path) else f"{e.where.removeprefix(str(path) + ':')}: "
                         f"{e.problem}") from None
    if isinstance(data, dict) and data and all(isinstance(v, dict) and "CONTEXTS" in v for v in data.values()):
        rows = [(pmid, {"id": pmid, "text": " ".join(c for c in r["CONTEXTS"] if isinstance(c, str))})
                for pmid, r in data.items()]
    elif isinstance(data, list) and all(isinstance(r, dict) for r in data):
        rows = [(f"record {i}", _alpaca(r) | {"id": str(i)} if "text" not in r and "output" in r else r)
                for i, r in enumerate(data)]
    else:
        raise Unreadable("unknown JSON layout: expected a list of {id, title, text} records, a list of "
                         "{instruction, input, output} rows, or PubMedQA's object PMID -> {CONTEXTS}")
    return _document(path, [_unit(row, str(where), str(i)) for i, (where, row) in enumerate(rows)])


def read_records(path: Path) -> Document:
    return read_jsonl(path) if path.suffix.lower() == ".jsonl" else read_json(path)
