"""The bundled samples are in the exact layouts of the real datasets, and plant what the demo needs."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from sm70.eval.tasks import load_task
from sm70.samples import sample_path

MEADOW = ["wikidoc_patient_information.json", "medical_flashcards.json", "health_advice.json"]


@pytest.mark.parametrize("name", MEADOW)
def test_medical_meadow_layout(name):
    rows = json.loads(sample_path("medical_meadow", name).read_text())
    assert isinstance(rows, list) and len(rows) >= 25
    assert all(set(r) == {"instruction", "input", "output"} and all(isinstance(v, str) for v in r.values())
               for r in rows)
    texts = [json.dumps(r, sort_keys=True) for r in rows]
    assert len(set(texts)) < len(texts), "each subset plants at least one exact duplicate"


def test_medqa_layout():
    rows = [json.loads(line) for line in sample_path("medqa", "test.jsonl").read_text().splitlines()]
    assert len(rows) == 40
    for r in rows:
        assert set(r) == {"question", "answer", "options", "meta_info", "answer_idx", "metamap_phrases"}
        assert list(r["options"]) == ["A", "B", "C", "D"] and r["options"][r["answer_idx"]] == r["answer"]
    assert set(Counter(r["answer_idx"] for r in rows)) == set("ABCD")
    assert len(load_task("medqa", sample_path("medqa"), split="train")) == 12


def test_pubmedqa_layout():
    records = json.loads(sample_path("pubmedqa", "ori_pqal.json").read_text())
    truth = json.loads(sample_path("pubmedqa", "test_ground_truth.json").read_text())
    assert len(records) == 30 and len(truth) == 20
    fields = {"QUESTION", "CONTEXTS", "LABELS", "MESHES", "YEAR", "reasoning_required_pred",
              "reasoning_free_pred", "final_decision", "LONG_ANSWER"}
    for pmid, r in records.items():
        assert len(pmid) == 8 and pmid.isdigit() and set(r) == fields
        assert len(r["CONTEXTS"]) == len(r["LABELS"])
    assert all(records[p]["final_decision"] == label for p, label in truth.items())


def test_usmle_plants_each_extraction_defect():
    items = load_task("usmle", sample_path("usmle"))
    reasons = " | ".join(i.excluded for i in items if i.excluded)
    for expected in ("image field", "refers to an image", "swallowed the next option", "not among the options"):
        assert expected in reasons
    steps = [json.loads(sample_path("usmle", f"step{n}.json").read_text()) for n in (1, 2, 3)]
    assert any(r["options"] == {} for r in steps[1])
    assert all(r["question"].endswith("\n\n") for r in steps[1] + steps[2])
    assert {len(r["options"]) for step in steps for r in step} >= {4, 5, 6}
