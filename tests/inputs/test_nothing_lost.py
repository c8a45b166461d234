"""Nothing lost: over random mixes of good and broken rows, every row read is either in train.jsonl
or in rejects.jsonl with its source, line and the reason its kind calls for, and the data card's
counts are those counts."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from sm70.config import load_config  # noqa: E402
from sm70.data.build import build  # noqa: E402
from sm70.data.config import DataConfig  # noqa: E402

WORDS = "anemia aspirin biopsy cardiac dosage edema fever glucose heparin insulin jaundice kidney".split()


def good(i: int) -> bytes:
    # Distinct words per row, so exact deduplication sees only the duplicates planted on purpose.
    topic = " ".join(WORDS[(i + k) % len(WORDS)] + str(i) for k in range(4))
    return json.dumps({"instruction": "Answer this question truthfully", "input": f"What about {topic}?",
                       "output": f"Row {i}: the answer concerns {topic}."}).encode()


# kind -> (the line, given the row number and the good rows so far; the reason it must be rejected for)
KINDS = {
    "good": (lambda i, kept: good(i), None),
    "duplicate": (lambda i, kept: kept[i % len(kept)] if kept else good(i), "duplicate"),
    "empty": (lambda i, kept: json.dumps({"instruction": "", "input": "", "output": "x"}).encode(), "empty"),
    "too_long": (lambda i, kept: json.dumps({"instruction": "a", "input": "word " * 400, "output": "b"}).encode(),
                 "too_long"),
    "wrong_type": (lambda i, kept: json.dumps({"instruction": "a", "input": "b", "output": i}).encode(), "malformed"),
    "missing": (lambda i, kept: json.dumps({"instruction": "a", "input": "b"}).encode(), "malformed"),
    "not_json": (lambda i, kept: good(i)[:-7], "malformed"),
    "cp1252": (lambda i, kept: good(i).replace(b"Row", b"R\xf6w"), "malformed"),
    "surrogate": (lambda i, kept: good(i).replace(b"Row", b"R\\udcffw"), "malformed"),
}


def write_rows(path: Path, kinds: list[str]) -> dict[int, str | None]:
    """The JSONL file; returns line -> the reason that line must be rejected for (None: kept)."""
    lines, expected, kept = [], {}, []
    for i, kind in enumerate(kinds):
        make, reason = KINDS[kind]
        line = make(i, kept)
        if kind == "duplicate" and line not in kept:
            reason = None  # nothing earlier to duplicate: it is a first copy
        if reason is None:
            kept.append(line)
        lines.append(line)
        expected[i + 1] = reason
    path.write_bytes(b"\n".join(lines) + b"\n")
    return expected


@settings(max_examples=25, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.sampled_from(sorted(KINDS)), min_size=1, max_size=40))
def test_rows_in_equal_kept_plus_rejected_per_reason(kinds):
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as mp:
        # The length histogram is most of a small build's time and is not what is checked here.
        mp.setattr("sm70.data.build.plot_lengths", lambda lengths, cap, estimated, path: path.write_bytes(b""))
        folder = Path(folder)
        expected = write_rows(folder / "rows.jsonl", kinds)
        cfg = load_config(DataConfig, None, [], out=str(folder / "out"), on_error="skip", val_fraction=0.0,
                          workers=1, max_tokens=300, dedup={"near": False},
                          sources=[{"name": "mix", "path": str(folder / "rows.jsonl")}])
        out = build(cfg)
        rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
        train = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
        card = json.loads((out / "datacard.json").read_text())

        assert {r["line"]: r["reason"] for r in rejects} == {n: r for n, r in expected.items() if r}
        assert all(r["source"] == "mix" and r["row"] is not None for r in rejects)
        assert sorted(int(t["id"].split("-")[1]) + 1 for t in train) == [n for n, r in expected.items() if not r]
        [source] = card["sources"]
        assert source["read"] == len(kinds) == len(train) + len(rejects)
        assert source["removed"] == dict(Counter(r["reason"] for r in rejects))
        assert card["totals"]["train"] == len(train) and card["totals"]["kept"] == len(train)
