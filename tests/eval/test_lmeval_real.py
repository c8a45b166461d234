"""lm-evaluation-harness 0.4.x itself against `sm70 eval` on the real model: the same items, identical
predictions and per-choice log-likelihoods within 1e-4 (real BPE tokenizer, no BOS, tied embeddings)."""

from __future__ import annotations

import json

import pytest

from sm70.config import load_config
from sm70.eval import lmeval
from sm70.eval.run import EvalConfig, evaluate
from sm70.eval.tasks import load_task

pytest.importorskip("lm_eval")

N = 6  # items per task: a handful, the real model costs ~1 s an item on this CPU
CASES = {"real_medqa": ("medqa", "lm-eval"), "real_medqa_text": ("medqa", "option-text"),
         "real_pubmedqa": ("pubmedqa", "lm-eval")}
pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def both(smollm2, tmp_path_factory):
    ours, items = {}, {}
    folder = tmp_path_factory.mktemp("lmeval_tasks")
    for name, (task, prompt) in CASES.items():
        out = evaluate(load_config(EvalConfig, model=str(smollm2), task=task, prompt=prompt, limit=N,
                                   batch_size=4, out=str(tmp_path_factory.mktemp(name))))
        ours[name] = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        items[name] = [i for i in load_task(task)[:N] if i.excluded is None]
        lmeval.write_task(folder, name, task, items[name], [], prompt)
    return ours, lmeval.run(smollm2, folder, list(CASES), batch_size=4), items


@pytest.mark.parametrize("name", list(CASES))
def test_sm70_eval_agrees_with_lm_eval_on_the_real_model(both, name):
    ours, theirs, items = both
    rows, reference = ours[name], theirs[name]
    assert len(rows) == len(reference) == len(items[name]) == N
    worst = 0.0
    for row, ref, item in zip(rows, reference, items[name]):
        assert row["id"] == item.id and len(row["logliks"]) == len(ref) == len(item.options)
        worst = max(worst, *(abs(a - b) for a, b in zip(row["logliks"], ref)))
        assert row["prediction"] == list(item.options)[max(range(len(ref)), key=lambda i: (ref[i], -i))]
    assert worst <= 1e-4, f"largest log-likelihood difference {worst:.2e}"
