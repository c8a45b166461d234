"""Agreement with lm-evaluation-harness 0.4.x, item by item, on the tiny model.

lm-eval itself runs here (offline, local task YAMLs that read the bundled samples through lm-eval's
own `medqa_4options` and `pubmedqa` prompt functions); `sm70 eval` scores the same items. Every
per-choice log-likelihood must agree within 1e-4 and every chosen answer must be identical.
"""

from __future__ import annotations

import json

import pytest

from sm70.config import load_config
from sm70.eval import lmeval
from sm70.eval.run import EvalConfig, evaluate
from sm70.eval.tasks import load_task

pytest.importorskip("lm_eval")

# (our task, lm-eval kind, prompt style, shots)
CASES = {
    "sm70_medqa": ("medqa", "medqa", "lm-eval", 0),
    "sm70_medqa_text_2shot": ("medqa", "medqa", "option-text", 2),  # multi-token choices + shared few-shot prefix
    "sm70_pubmedqa": ("pubmedqa", "pubmedqa", "lm-eval", 0),
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def both(tiny_model, tmp_path_factory):
    ours, items_by_case, shots_by_case = {}, {}, {}
    for name, (task, _, prompt, shots) in CASES.items():
        out = evaluate(load_config(EvalConfig, model=str(tiny_model), task=task, prompt=prompt, shots=shots,
                                   batch_size=3, out=str(tmp_path_factory.mktemp(name))))
        results = json.loads((out / "results.json").read_text())
        ours[name] = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        items_by_case[name] = load_task(task)
        train = {i.id: i for i in load_task(task, split="train")}
        shots_by_case[name] = [train[i] for i in results["tasks"][task]["shot_ids"]]
    folder = tmp_path_factory.mktemp("lmeval_tasks")
    for name, (_, kind, prompt, _) in CASES.items():
        lmeval.write_task(folder, name, kind, items_by_case[name], shots_by_case[name], prompt)
    theirs = lmeval.run(tiny_model, folder, list(CASES), batch_size=4)
    return ours, theirs, items_by_case


@pytest.mark.parametrize("name", list(CASES))
def test_per_item_logliks_and_answers_agree(both, name):
    ours, theirs, items = both
    rows, reference = ours[name], theirs[name]
    assert len(rows) == len(reference) == len(items[name]) >= 10
    worst = 0.0
    for row, ref, item in zip(rows, reference, items[name]):
        assert row["id"] == item.id
        assert len(row["logliks"]) == len(ref)
        worst = max(worst, *(abs(a - b) for a, b in zip(row["logliks"], ref)))
        keys = list(item.options)
        assert row["prediction"] == keys[max(range(len(ref)), key=lambda i: (ref[i], -i))]
    assert worst <= 1e-4, f"largest log-likelihood difference {worst:.2e}"
