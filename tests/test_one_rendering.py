"""One rendering path, on the real chat model: the prompt a training row was rendered with is, byte for
byte, the prompt evaluation builds and the prompt the server builds for the same question."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from sm70 import render
from sm70.config import load_config


@pytest.fixture(scope="module")
def rows_and_items(smollm2, tmp_path_factory):
    from sm70.data.build import DataConfig, build
    from sm70.eval.tasks import load_task

    out = tmp_path_factory.mktemp("rendering") / "data"
    sources = [{"name": "medqa", "path": "samples://medqa/test.jsonl", "format": "medqa", "split": "test"},
               {"name": "pubmedqa", "path": "samples://pubmedqa", "format": "pubmedqa", "split": "test"}]
    build(load_config(DataConfig, out=str(out), sources=sources, template="chat", tokenizer=str(smollm2),
                      val_fraction=0.0, dedup={"near": False}))
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert rows
    return rows, {"medqa": load_task("medqa"), "pubmedqa": load_task("pubmedqa")}


def test_training_eval_and_serve_build_the_same_prompt(rows_and_items, smollm2):
    from sm70.eval.engine import Setting, build_context
    from sm70.eval.tasks import get_task, question_text
    from sm70.model.load import load_tokenizer
    from sm70.serve.api.protocol import ChatRequest
    from sm70.serve.api.serving import Service

    rows, items = rows_and_items
    tok = load_tokenizer(smollm2)
    # The server with no system prompt of its own, i.e. the model's default system turn, as in training.
    service = Service(SimpleNamespace(tokenizer=tok, model_ids=["m"]), system_prompt="")
    trained = {r["source"]: set() for r in rows}
    for r in rows:
        trained[r["source"]].add(r["prompt"])
    checked = 0
    for task_name, task_items in items.items():
        task = get_task(task_name)
        for item in task_items[:4]:
            evaluated = build_context(task, item, [], Setting(template="chat"), tok)
            content = f"{render.INSTRUCTIONS[task.layout]}\n\n{question_text(task, item)}"
            served = service.chat_prompt(ChatRequest(messages=[{"role": "user", "content": content}]))
            assert evaluated in trained[task_name]  # byte for byte one of the training rows' prompts
            assert served == evaluated
            assert evaluated.endswith("<|im_start|>assistant\n")
            ids = tok(evaluated, add_special_tokens=False)["input_ids"]
            assert tok.convert_ids_to_tokens(ids).count("<|im_start|>") == 3  # special tokens stay one token each
            checked += 1
    assert checked == 8
