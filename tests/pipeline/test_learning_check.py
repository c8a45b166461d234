"""The loop closes: rows rendered by the data stage, trained with QLoRA, scored by the evaluation stage.

If the data renderer, the trainer and the scorer disagreed on the format (a missing space before the
letter, a different option layout), the tuned model would not score what it learned.
"""

from __future__ import annotations

import json

import pytest

from sm70.config import load_config
from sm70.pipeline.config import find_recipe


@pytest.mark.slow
def test_tiny_model_learns_the_answer_letters(tmp_path, tiny_model):
    from sm70.data.build import DataConfig, build
    from sm70.eval.run import EvalConfig, evaluate
    from sm70.train.sft import TrainConfig, train

    data = build(load_config(DataConfig, find_recipe("recipes/data/medqa-mc.yaml"), [f"out={tmp_path / 'data'}"]))
    rows = [json.loads(l) for l in (data / "train.jsonl").read_text().splitlines()]
    assert len(rows) >= 30 and all(r["completion"] in (" A", " B", " C", " D") for r in rows)

    def accuracy(adapter=None) -> float:
        out = tmp_path / ("eval-tuned" if adapter else "eval-base")
        overrides = [f"model={tiny_model}", "task=medqa", "mode=loglik", "prompt=lm-eval", "shots=0",
                     f"out={out}", "quant=nf4"] + ([f"adapter={adapter}"] if adapter else [])
        evaluate(load_config(EvalConfig, None, overrides))
        results = json.loads((out / "results.json").read_text())
        return results["tasks"]["medqa"]["metrics"]["acc"]["value"]

    before = accuracy()
    assert before < 0.5, f"an untrained tiny model should be near chance, got {before:.2f}"

    run = train(load_config(TrainConfig, None, [
        f"model={tiny_model}", f"data={data}", f"out={tmp_path / 'train'}", "quant=nf4", "epochs=12",
        "lr=3e-3", "micro_batch=8", "max_length=512", "lora_r=16", "lora_alpha=32", "lora_dropout=0.0",
        "schedule=constant", "warmup_ratio=0.0", "max_grad_norm=1.0", "save_steps=1000", "eval_steps=1000",
        "logging_steps=10"]))
    after = accuracy(run / "adapter")
    print(f"learning check: MedQA sample accuracy {before:.2f} -> {after:.2f}")
    assert after >= 0.9, f"accuracy went from {before:.2f} to only {after:.2f}"
