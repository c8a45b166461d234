"""lm-evaluation-harness as the oracle: local task YAMLs that read our data files with lm-eval's own
prompt functions, and a runner that returns lm-eval's per-item log-likelihoods.

Used by the agreement test and the throughput benchmark; lm_eval is a dev dependency, imported
only here. MedQA rows are given to lm-eval in the GBaker hub layout its `medqa_4options` task
reads; PubMedQA rows are the `ori_pqal.json` records, whose fields its `pubmedqa` task reads.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sm70.eval.tasks import Item

UTILS = '''\
from lm_eval.tasks.medqa.preprocess_medqa import doc_to_text as medqa_text  # lm-eval's own prompts
from lm_eval.tasks.pubmedqa.preprocess_pubmedqa import doc_to_text as pubmedqa_text


def medqa_target(doc):
    return doc["label"]


def medqa_option_text(doc):
    # Option-text choices: the letter and the full answer text ("A. <text>").
    return [f"{letter}. {doc[f'ending{i}']}" for i, letter in enumerate("ABCD")]
'''


def medqa_row(item: Item) -> dict:
    letters = list(item.options)
    row = {"sent1": item.question, "label": letters.index(item.gold)}
    row.update({f"ending{i}": item.options[k] for i, k in enumerate(letters)})
    return row


def pubmedqa_row(item: Item) -> dict:
    return {"QUESTION": item.question, "CONTEXTS": list(item.context), "final_decision": item.gold}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def write_task(folder: Path, name: str, kind: str, items: list[Item], shots: list[Item], style: str = "lm-eval") -> str:
    """A local lm-eval task `name` over `items`, `len(shots)`-shot from `shots` (first_n sampler)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sm70_lmeval_utils.py").write_text(UTILS)
    to_row = medqa_row if kind == "medqa" else pubmedqa_row
    write_jsonl(folder / f"{name}_test.jsonl", [to_row(i) for i in items])
    write_jsonl(folder / f"{name}_shots.jsonl", [to_row(i) for i in (shots or items[:1])])
    if kind == "medqa":
        text, target = "!function sm70_lmeval_utils.medqa_text", "!function sm70_lmeval_utils.medqa_target"
        choice = "!function sm70_lmeval_utils.medqa_option_text" if style == "option-text" else "['A', 'B', 'C', 'D']"
    else:
        text, target, choice = "!function sm70_lmeval_utils.pubmedqa_text", "final_decision", "['yes', 'no', 'maybe']"
    (folder / f"{name}.yaml").write_text(f"""task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder / f"{name}_test.jsonl"}
    train: {folder / f"{name}_shots.jsonl"}
test_split: test
fewshot_split: train
num_fewshot: {len(shots)}
fewshot_config:
  sampler: first_n
output_type: multiple_choice
doc_to_text: {text}
doc_to_target: {target}
doc_to_choice: {choice}
metric_list:
  - metric: acc
  - metric: acc_norm
""")
    return name


def run(model_dir: str | Path, folder: Path, tasks: list[str], batch_size: int = 8) -> dict[str, list[list[float]]]:
    """Run lm-eval (HFLM) on local tasks; per task, per item, per choice log-likelihoods."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[var] = "1"
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    lm = HFLM(pretrained=str(model_dir), batch_size=batch_size, device="cpu", dtype="float32")
    results = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), log_samples=True,
                                      task_manager=TaskManager(include_path=str(folder), include_defaults=False),
                                      bootstrap_iters=0, random_seed=0, numpy_random_seed=0,
                                      torch_random_seed=0, fewshot_random_seed=0)
    out: dict[str, list[list[float]]] = {}
    for name in tasks:
        samples = sorted(results["samples"][name], key=lambda s: s["doc_id"])
        out[name] = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    return out
