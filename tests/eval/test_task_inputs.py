"""Broken benchmark files, one table per task: a clear error naming the file (and line or record,
and field), or an item kept with the reason it is not scored; never a silently shorter test set."""

from __future__ import annotations

import codecs
import json
import re

import pytest

from sm70.errors import Sm70Error
from sm70.eval.tasks import load_task

Q = {"question": "Which drug?", "options": {"A": "Aspirin", "B": "Heparin"}, "answer_idx": "B"}


def lines(*rows) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


# MedQA JSONL: (id, the file, what the error says)
MEDQA_BROKEN = [
    ("empty", b"", "test.jsonl: no questions"),
    ("blank-lines", b"\n \n", "test.jsonl: no questions"),
    ("binary", b"\x00\x01PNG\x89", "binary file"),
    ("utf16", lines(Q).decode().encode("utf-16"), "UTF-16 byte-order mark"),
    ("cp1252", lines(Q, b'{"question": "caf\xe9?", "options": {"A": "a"}, "answer_idx": "A"}'),
     "test.jsonl:2: not valid UTF-8 at byte"),
    ("truncated", lines(Q) + json.dumps(Q).encode()[:25], "test.jsonl:2: not valid JSON"),
    ("not-an-object", lines(Q, [1, 2]), "test.jsonl:2: expected a JSON object, got list"),
    ("question-missing", lines({"options": {"A": "a"}, "answer_idx": "A"}), "test.jsonl:1: question: missing"),
    ("question-int", lines({**Q, "question": 7}), "test.jsonl:1: question: expected str, got int"),
    ("options-list", lines({**Q, "options": ["a", "b"]}), "options: expected dict, got list"),
    ("option-null", lines({**Q, "options": {"A": None, "B": "b"}}), "options.A: expected str, got NoneType"),
    ("gold-not-an-option", lines({**Q, "answer_idx": "E"}), "answer_idx: 'E' is not one of the options"),
    ("gold-int", lines({**Q, "answer_idx": 1}), "answer_idx: expected str, got int"),
    ("duplicate-key", b'{"question": "Q", "options": {"A": "a", "B": "b"}, "answer_idx": "A", "answer_idx": "B"}\n',
     "key 'answer_idx' appears twice"),
    ("surrogate", b'{"question": "Q \\udcff", "options": {"A": "a"}, "answer_idx": "A"}\n',
     "question: contains an unpaired UTF-16 surrogate"),
    ("huge-number", b'{"question": "Q", "options": {"A": "a"}, "answer_idx": ' + b"1" * 5000 + b"}\n", "4,300 digits"),
    ("deep", b'{"question": ' + b"[" * 50_000 + b"]" * 50_000 + b"}\n", "nested too deeply"),
    ("hub-label-bool", lines({"sent1": "Q", "ending0": "a", "ending1": "b", "label": True}),
     "label: expected int, got bool"),
    ("hub-label-out-of-range", lines({"sent1": "Q", "ending0": "a", "label": 10**12}), "label: 1000000000000 is not"),
    ("hub-too-many-endings", lines({"sent1": "Q", **{f"ending{i}": "x" for i in range(11)}, "label": 0}),
     "11 endings; at most 10"),
    ("hub-ending-gap", lines({"sent1": "Q", "ending0": "a", "ending2": "c", "label": 0}), "ending1: missing"),
]


@pytest.mark.parametrize("content, message", [c[1:] for c in MEDQA_BROKEN], ids=[c[0] for c in MEDQA_BROKEN])
def test_medqa_broken(tmp_path, content, message):
    (tmp_path / "test.jsonl").write_bytes(content)
    with pytest.raises(Sm70Error, match=re.escape(message)) as e:
        load_task("medqa", tmp_path)
    assert str(tmp_path / "test.jsonl") in str(e.value)


@pytest.mark.parametrize("row, reason", [
    ({**Q, "question": "  "}, "the question is empty"),
    ({**Q, "options": {"A": "Aspirin", "B": ""}}, "option B is empty"),
])
def test_medqa_unscorable_items_are_kept_with_a_reason(tmp_path, row, reason):
    (tmp_path / "test.jsonl").write_bytes(lines(Q, row, Q))
    items = load_task("medqa", tmp_path)
    assert [i.excluded for i in items] == [None, reason, None], "the test set keeps its size"


def test_medqa_with_a_bom_reads(tmp_path):
    (tmp_path / "test.jsonl").write_bytes(codecs.BOM_UTF8 + lines(Q, Q))
    assert len(load_task("medqa", tmp_path)) == 2


RECORD = {"QUESTION": "Does it?", "CONTEXTS": ["Background.", "Results."], "final_decision": "yes"}


def pubmedqa_files(labelled: bytes | dict, truth: bytes | dict) -> dict[str, bytes]:
    def raw(v):
        return v if isinstance(v, bytes) else json.dumps(v).encode()
    return {"ori_pqal.json": raw(labelled), "test_ground_truth.json": raw(truth)}


# PubMedQA: (id, ori_pqal.json, test_ground_truth.json, the file the error names, what it says)
PUBMEDQA_BROKEN = [
    ("ids-disagree", {"1": RECORD}, {"2": "yes"}, "test_ground_truth.json", "PMID 2: not in ori_pqal.json"),
    ("answers-disagree", {"1": RECORD}, {"1": "no"}, "test_ground_truth.json", "disagrees with final_decision"),
    ("answer-not-an-option", {"1": RECORD}, {"1": "perhaps"}, "test_ground_truth.json", "is not yes, no or maybe"),
    ("answer-list", {"1": RECORD}, {"1": ["yes"]}, "test_ground_truth.json", "is not yes, no or maybe"),
    ("gold-not-an-option", {"1": {**RECORD, "final_decision": "perhaps"}}, {"1": "perhaps"},
     "test_ground_truth.json", "is not yes, no or maybe"),
    ("duplicate-pmid", b'{"1": ' + json.dumps(RECORD).encode() + b', "1": ' + json.dumps(RECORD).encode() + b"}",
     {"1": "yes"}, "ori_pqal.json", "key '1' appears twice"),
    ("duplicate-truth", {"1": RECORD}, b'{"1": "yes", "1": "yes"}', "test_ground_truth.json", "key '1' appears twice"),
    ("labelled-list", [RECORD], {"1": "yes"}, "ori_pqal.json", "expected an object PMID -> record"),
    ("truth-list", {"1": RECORD}, ["1"], "test_ground_truth.json", "expected an object PMID -> yes/no/maybe"),
    ("empty-truth", {"1": RECORD}, {}, "test_ground_truth.json", "no items"),
    ("empty-labelled", {}, {}, "ori_pqal.json", "no items"),
    ("record-not-object", {"1": "yes"}, {"1": "yes"}, "ori_pqal.json", "PMID 1: expected an object"),
    ("contexts-missing", {"1": {"QUESTION": "Q", "final_decision": "yes"}}, {"1": "yes"}, "ori_pqal.json",
     "PMID 1: CONTEXTS: missing"),
    ("contexts-string", {"1": {**RECORD, "CONTEXTS": "one string"}}, {"1": "yes"}, "ori_pqal.json",
     "CONTEXTS: expected list, got str"),
    ("context-int", {"1": {**RECORD, "CONTEXTS": ["a", 2]}}, {"1": "yes"}, "ori_pqal.json",
     "CONTEXTS[1]: expected str, got int"),
    ("question-null", {"1": {**RECORD, "QUESTION": None}}, {"1": "yes"}, "ori_pqal.json",
     "QUESTION: expected str, got NoneType"),
    ("truncated", json.dumps({"1": RECORD}).encode()[:-10], {"1": "yes"}, "ori_pqal.json", "not valid JSON"),
    ("binary", b"\x00" * 64, {"1": "yes"}, "ori_pqal.json", "binary file"),
    ("utf16", json.dumps({"1": RECORD}).encode("utf-16"), {"1": "yes"}, "ori_pqal.json", "UTF-16"),
    ("cp1252", json.dumps({"1": {**RECORD, "QUESTION": "Caf\xe9?"}}, ensure_ascii=False).encode("cp1252"),
     {"1": "yes"}, "ori_pqal.json", "not valid UTF-8 at byte"),
]


@pytest.mark.parametrize("labelled, truth, file, message", [c[1:] for c in PUBMEDQA_BROKEN],
                         ids=[c[0] for c in PUBMEDQA_BROKEN])
def test_pubmedqa_broken(tmp_path, labelled, truth, file, message):
    for name, content in pubmedqa_files(labelled, truth).items():
        (tmp_path / name).write_bytes(content)
    with pytest.raises(Sm70Error, match=re.escape(message)) as e:
        load_task("pubmedqa", tmp_path)
    assert str(tmp_path / file) in str(e.value)


def test_pubmedqa_missing_truth_file(tmp_path):
    (tmp_path / "ori_pqal.json").write_text(json.dumps({"1": RECORD}))
    with pytest.raises(Sm70Error, match="test_ground_truth.json: file not found"):
        load_task("pubmedqa", tmp_path)


def test_pubmedqa_empty_abstract_is_kept_with_a_reason(tmp_path):
    for name, content in pubmedqa_files({"1": RECORD, "2": {**RECORD, "CONTEXTS": []}}, {"1": "yes", "2": "yes"}).items():
        (tmp_path / name).write_bytes(content)
    assert [i.excluded for i in load_task("pubmedqa", tmp_path)] == [None, "the abstract is empty"]


OPTS = {"A": "Aspirin", "B": "Heparin"}
STEP = [{"no": 1, "question": "Which drug?", "options": OPTS}, {"no": 2, "question": "Which dose?", "options": OPTS}]


# USMLE: (id, step1.json, step1_solutions.json, the file the error names, what it says)
USMLE_BROKEN = [
    ("answer-missing", STEP, {"1": "A"}, "step1_solutions.json", "2: no answer for question 2"),
    ("answer-extra", STEP, {"1": "A", "2": "B", "3": "C"}, "step1_solutions.json", "answers for questions not in"),
    ("answer-int", STEP, {"1": "A", "2": 2}, "step1_solutions.json", "2: expected str, got int"),
    ("duplicate-no", [STEP[0], {**STEP[1], "no": 1}], {"1": "A"}, "step1.json", "no: question 1 appears twice"),
    ("duplicate-solution", STEP, b'{"1": "A", "2": "B", "2": "C"}', "step1_solutions.json", "key '2' appears twice"),
    ("no-bool", [{**STEP[0], "no": True}], {"1": "A"}, "step1.json", "record 0: no: expected int, got bool"),
    ("no-string", [{**STEP[0], "no": "1"}], {"1": "A"}, "step1.json", "record 0: no: expected int, got str"),
    ("options-list", [{**STEP[0], "options": ["a"]}], {"1": "A"}, "step1.json", "options: expected dict, got list"),
    ("option-int", [{**STEP[0], "options": {"A": 1}}], {"1": "A"}, "step1.json", "options.A: expected str, got int"),
    ("question-missing", [{"no": 1, "options": OPTS}], {"1": "A"}, "step1.json", "(no 1): question: missing"),
    ("record-string", ["Which drug?"], {"1": "A"}, "step1.json", "record 0: expected an object"),
    ("not-a-list", {"1": STEP[0]}, {"1": "A"}, "step1.json", "expected a list of questions"),
    ("solutions-list", STEP, ["A", "B"], "step1_solutions.json", "expected an object number -> letter"),
    ("empty", [], {}, "step1.json", "no questions"),
    ("truncated", json.dumps(STEP).encode()[:-5], {"1": "A", "2": "B"}, "step1.json", "not valid JSON"),
    ("binary", b"\x89PNG\r\n\x1a\n\x00\x00", {"1": "A"}, "step1.json", "binary file"),
    ("cp1252", json.dumps([{**STEP[0], "question": "Caf\xe9?"}], ensure_ascii=False).encode("cp1252"), {"1": "A"},
     "step1.json", "not valid UTF-8 at byte"),
    ("huge-no", b'[{"no": ' + b"7" * 4400 + b', "question": "Q", "options": {}}]', {"1": "A"}, "step1.json",
     "4,300 digits"),
]


@pytest.mark.parametrize("questions, solutions, file, message", [c[1:] for c in USMLE_BROKEN],
                         ids=[c[0] for c in USMLE_BROKEN])
def test_usmle_broken(tmp_path, questions, solutions, file, message):
    for name, value in (("step1.json", questions), ("step1_solutions.json", solutions)):
        (tmp_path / name).write_bytes(value if isinstance(value, bytes) else json.dumps(value).encode())
    with pytest.raises(Sm70Error, match=re.escape(message)) as e:
        load_task("usmle_step1", tmp_path)
    assert str(tmp_path / file) in str(e.value)


def test_usmle_gold_not_an_option_is_kept_with_a_reason(tmp_path):
    (tmp_path / "step1.json").write_text(json.dumps(STEP))
    (tmp_path / "step1_solutions.json").write_text(json.dumps({"1": "A", "2": "E"}))
    items = load_task("usmle_step1", tmp_path)
    assert [i.excluded for i in items] == [None, "gold letter 'E' is not among the options ['A', 'B']"]


def test_usmle_missing_solutions_file(tmp_path):
    (tmp_path / "step1.json").write_text(json.dumps(STEP))
    with pytest.raises(Sm70Error, match="step1_solutions.json: file not found"):
        load_task("usmle_step1", tmp_path)


@pytest.mark.usefixtures("one_thread")
def test_an_exclusion_reaches_results_json_and_a_broken_file_is_a_clean_cli_error(tiny_model, tmp_path, capsys):
    from sm70.cli import main

    (tmp_path / "test.jsonl").write_bytes(lines(Q, {**Q, "question": ""}, Q))
    out = tmp_path / "run"
    assert main(["eval", f"model={tiny_model}", f"out={out}", "task=medqa", f"data={tmp_path / 'test.jsonl'}"]) == 0
    [task] = json.loads((out / "results.json").read_text())["tasks"].values()
    assert task["n_total"] == 3 and task["n"] == 2 and task["excluded"] == [{"id": "1", "reason": "the question is empty"}]

    (tmp_path / "test.jsonl").write_bytes(lines(Q) + b"\xff\xfe\n")
    assert main(["eval", f"model={tiny_model}", f"out={tmp_path / 'run2'}", "task=medqa",
                 f"data={tmp_path / 'test.jsonl'}"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'test.jsonl'}:2: not valid UTF-8 at byte" in err and "Traceback" not in err
