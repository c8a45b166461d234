"""Task loaders: real formats, real counts, every USMLE defect kind found by rule, clear errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sm70.errors import Sm70Error
from sm70.eval.tasks import (
    TASKS,
    continuations,
    fewshot_block,
    get_task,
    load_task,
    question_text,
)
from sm70.samples import sample_path

# ---- real files (skip when ../shared/data is absent) ----

def test_medqa_real_counts(shared_data):
    items = load_task("medqa", shared_data / "medqa_usmle" / "phrases_no_exclude_test.jsonl")
    assert len(items) == 1273
    assert items[0].id == "0" and items[-1].id == "1272"
    assert all(list(i.options) == ["A", "B", "C", "D"] and i.gold in i.options for i in items)
    assert load_task("medqa", shared_data / "medqa_usmle") == items  # a folder finds the test file


def test_pubmedqa_real_counts(shared_data):
    test = load_task("pubmedqa", shared_data / "pubmedqa")
    truth = json.loads((shared_data / "pubmedqa" / "test_ground_truth.json").read_text())
    assert len(test) == 500 and [i.id for i in test] == list(truth)
    assert [i.gold for i in test] == list(truth.values())
    assert len(load_task("pubmedqa", shared_data / "pubmedqa", split="all")) == 1000
    train = load_task("pubmedqa", shared_data / "pubmedqa", split="train")
    assert len(train) == 500 and not {i.id for i in train} & set(truth)


# Exclusions found by the rules on the real files; every reason is listed in results.json.
USMLE_EXPECTED = {1: (119, 26), 2: (120, 13), 3: (137, 15)}


@pytest.mark.parametrize("step", [1, 2, 3])
def test_usmle_real_counts_and_exclusions(shared_data, step):
    items = load_task(f"usmle_step{step}", shared_data / "usmle_self_assessment")
    total, excluded = USMLE_EXPECTED[step]
    assert len(items) == total
    assert sum(1 for i in items if i.excluded) == excluded
    for item in items:
        assert item.question == item.question.strip() and not item.question.startswith(".")
        if not item.excluded:  # never score garbage
            assert item.gold in item.options and all(item.options.values())


def test_usmle_real_defects_by_kind(shared_data):
    items = {i.id: i for i in load_task("usmle", shared_data / "usmle_self_assessment")}
    assert len(items) == 376
    reason = {k: v.excluded or "" for k, v in items.items()}
    assert "image field" in reason["step1-11"] and "image field" in reason["step1-30"]
    assert "image" in reason["step1-44"]             # "findings in the photograph", no marker
    assert "swallowed the next option" in reason["step2-91"]
    assert "swallowed the next option" in reason["step2-115"]  # its gold E is not an option either
    assert "swallowed the next question" in reason["step3-11"]
    assert "swallowed the next question" in reason["step3-24"]
    assert "table" in reason["step3-55"]
    assert reason["step2-12"] == ""                  # "shown in the Table" with the table in the text
    assert reason["step1-84"] == ""                  # "Results ... are shown:" followed by the values
    repaired = items["step2-119"]                    # choices recovered from the question text
    assert repaired.excluded is None and list(repaired.options) == ["A", "B", "C", "D"] and repaired.gold == "C"
    assert "A.\t" not in repaired.question
    kept = load_task("usmle_step1", shared_data / "usmle_self_assessment", include_images=True)
    # Only the defective ones stay out: empty options (62; 80 and 85 label parts of a picture).
    assert {i.id: i.excluded for i in kept if i.excluded} == {f"step1-{n}": "option A is empty" for n in (62, 80, 85)}


# ---- rules on hand-made records in the real layout ----

def write_usmle(folder: Path, records: list[dict], solutions: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "step1.json").write_text(json.dumps(records))
    (folder / "step1_solutions.json").write_text(json.dumps(solutions))
    return folder


OPTS = {"A": "Aspirin", "B": "Heparin", "C": "Warfarin"}


@pytest.mark.parametrize("record,gold,reason", [
    ({"question": "Which drug?", "options": OPTS}, "B", None),
    ({"question": "Which drug?", "options": OPTS, "image": "image_link_here"}, "B", "image field"),
    ({"question": "A photomicrograph of the biopsy is shown. Which drug?", "options": OPTS}, "B", "image"),
    ({"question": "Examination shows the findings in the photograph. Which?", "options": OPTS}, "B", "image"),
    ({"question": "Results are shown: XXX\nWhich drug?", "options": OPTS}, "B", "table"),
    ({"question": "Results are shown in the table. Which drug?", "options": OPTS}, "B", "table"),
    ({"question": "Results are shown:\nNa 140 mEq/L\nK 4.1 mEq/L\nCl 101\nWhich drug?", "options": OPTS}, "B", None),
    ({"question": "Which drug?", "options": {"A": "Aspirin", "B": "Heparin\n\nAnswer C: Warfarin"}}, "A",
     "swallowed the next option"),
    ({"question": "Which drug?", "options": {"A": "Aspirin", "B": "Heparin \n\n\nQuestion:\nWhat next?"}}, "A",
     "swallowed the next question"),
    ({"question": "Which drug?", "options": {"A": "Aspirin", "B": "Heparin\n\nA 23-year-old man comes in"}}, "A",
     "swallowed the next question"),
    ({"question": "Which drug?", "options": OPTS}, "E", "not among the options"),
    ({"question": "Which drug?", "options": {"A": "", "B": ""}}, "A", "empty"),
    ({"question": "Which drug?", "options": {}}, "A", "no options"),
])
def test_usmle_defect_rules(tmp_path, record, gold, reason):
    folder = write_usmle(tmp_path, [{"no": 1, **record}], {"1": gold})
    [item] = load_task("usmle_step1", folder)
    if reason is None:
        assert item.excluded is None
    else:
        assert item.excluded and reason in item.excluded


def test_usmle_strips_extraction_debris(tmp_path):
    folder = write_usmle(tmp_path, [{"no": 7, "question": ". \nWhich drug?\n\n", "options": {"A": "x \n", "B": "y"}}],
                         {"7": "A"})
    [item] = load_task("usmle_step1", folder)
    assert (item.id, item.question, item.options) == ("step1-7", "Which drug?", {"A": "x", "B": "y"})


@pytest.mark.parametrize("records,solutions,message", [
    ([{"no": 1, "question": "Q", "options": OPTS}], {}, "no answer for question 1"),
    ([{"no": 1, "options": OPTS}], {"1": "A"}, "record 0 (no 1): question: missing"),
    ([{"no": "1", "question": "Q", "options": OPTS}], {"1": "A"}, "record 0: no: expected int"),
    ([{"no": 1, "question": "Q", "options": {"A": 3}}], {"1": "A"}, "options.A: expected str"),
    ([{"no": 1, "question": "Q", "options": OPTS}], {"1": "A", "2": "B"}, "questions not in step1.json"),
])
def test_usmle_malformed(tmp_path, records, solutions, message):
    folder = write_usmle(tmp_path, records, solutions)
    with pytest.raises(Sm70Error, match=re.escape(message)):
        load_task("usmle_step1", folder)


def test_medqa_both_layouts(tmp_path):
    original = {"question": "Q1?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "C",
                "answer": "c"}
    gbaker = {"id": "x", "sent1": "Q1?", "sent2": "", "ending0": "a", "ending1": "b", "ending2": "c",
              "ending3": "d", "label": 2}
    (tmp_path / "orig.jsonl").write_text(json.dumps(original) + "\n\n")
    (tmp_path / "hub.jsonl").write_text(json.dumps(gbaker) + "\n")
    a, = load_task("medqa", tmp_path / "orig.jsonl")
    b, = load_task("medqa", tmp_path / "hub.jsonl")
    assert (a.id, a.question, a.options, a.gold) == (b.id, b.question, b.options, b.gold) == \
        ("0", "Q1?", {"A": "a", "B": "b", "C": "c", "D": "d"}, "C")


@pytest.mark.parametrize("line,message", [
    ('{"question": "Q", "options": {"A": "a"}, "answer_idx": "B"}', r"bad.jsonl:2: answer_idx"),
    ('{"question": "Q", "answer_idx": "A"}', r"bad.jsonl:2: options: missing"),
    ('{"sent1": "Q", "ending0": "a", "label": 4}', r"bad.jsonl:2: label"),
    ('{"question": "Q", ', r"bad.jsonl:2: not valid JSON"),
])
def test_medqa_malformed(tmp_path, line, message):
    good = '{"question": "Q", "options": {"A": "a"}, "answer_idx": "A"}'
    (tmp_path / "bad.jsonl").write_text(good + "\n" + line + "\n")
    with pytest.raises(Sm70Error, match=message):
        load_task("medqa", tmp_path / "bad.jsonl")


def test_pubmedqa_malformed(tmp_path):
    record = {"QUESTION": "Q?", "CONTEXTS": ["c1", "c2"], "final_decision": "yes"}
    (tmp_path / "ori_pqal.json").write_text(json.dumps({"1": record, "2": {**record, "final_decision": "perhaps"}}))
    (tmp_path / "test_ground_truth.json").write_text(json.dumps({"1": "yes"}))
    [item] = load_task("pubmedqa", tmp_path)
    assert (item.id, item.context, item.options, item.gold) == ("1", ("c1", "c2"),
                                                                 {"yes": "yes", "no": "no", "maybe": "maybe"}, "yes")
    with pytest.raises(Sm70Error, match=r"PMID 2: final_decision: 'perhaps'"):
        load_task("pubmedqa", tmp_path, split="all")
    (tmp_path / "test_ground_truth.json").write_text(json.dumps({"1": "no"}))
    with pytest.raises(Sm70Error, match="disagrees with final_decision"):
        load_task("pubmedqa", tmp_path)


def test_unknown_task():
    with pytest.raises(Sm70Error, match="unknown task 'medmcqa'"):
        load_task("medmcqa")


# ---- rendering: lm-eval's exact text ----

def test_rendering_matches_lm_eval_layout():
    from sm70.eval.tasks import Item

    mc = Item("0", "What is it?", {"A": "x", "B": "y"}, "B")
    medqa = get_task("medqa")
    assert question_text(medqa, mc) == "Question: What is it?\nA. x\nB. y\nAnswer:"
    assert continuations(medqa, mc, "lm-eval") == [" A", " B"]
    assert continuations(medqa, mc, "option-text") == [" A. x", " B. y"]
    assert fewshot_block(medqa, [mc], "option-text") == "Question: What is it?\nA. x\nB. y\nAnswer: B. y\n\n"
    pq = Item("9", "Does it?", {"yes": "yes", "no": "no", "maybe": "maybe"}, "no", context=("c1", "c2"))
    pubmedqa = get_task("pubmedqa")
    assert question_text(pubmedqa, pq) == "Abstract: c1\nc2\nQuestion: Does it?\nAnswer:"
    assert continuations(pubmedqa, pq, "lm-eval") == continuations(pubmedqa, pq, "option-text") == \
        [" yes", " no", " maybe"]


# ---- bundled samples ----

@pytest.mark.skipif(not sample_path("medqa", "test.jsonl").is_file(), reason="bundled samples not written yet")
@pytest.mark.parametrize("name", list(TASKS))
def test_samples_load(name):
    items = load_task(name)
    assert items and all(i.gold in i.options for i in items if not i.excluded)
    if name == "medqa":
        assert load_task("medqa", split="train")
