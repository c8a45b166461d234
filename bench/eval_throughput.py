"""lm-evaluation-harness vs `sm70 eval`, loglik mode, same tiny model, same batch size, same items.

1. MedQA, 5-shot, option-text choices (the letter and the full answer text are scored): N real test
   items, the same five fixed shots for every item (first_n) taken from test items outside the N.
2. PubMedQA, 0-shot, lettered (" yes"/" no"/" maybe"): N items of the official test split.

For each: both wall times (model load + scoring), the speed ratio, the number of items whose
prediction differs (must be 0) and the largest per-choice log-likelihood difference. The last
line is the MedQA ratio.

    python bench/eval_throughput.py [--items 100] [--batch-size 8] [--threads N] [--model tiny|smollm2]

`--model smollm2` scores the real SmolLM2-135M-Instruct (fetched into .cache/models) instead of the
tiny bench shape.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("SM70_SHARED_DATA", ROOT.parent / "shared" / "data"))


def build_model(folder: Path, which: str = "tiny") -> Path:
    from sm70.config import load_config
    from sm70.model.tiny import TinyModelConfig, build_tiny_model

    if which == "smollm2":
        from sm70.model.fetch import FetchConfig, fetch

        return fetch(load_config(FetchConfig, name="smollm2-135m-instruct",
                                 out=str(ROOT / ".cache" / "models" / "smollm2-135m-instruct")))

    return build_tiny_model(load_config(TinyModelConfig, out=str(folder / "model"), hidden_size=512, num_layers=8,
                                        intermediate_size=1408, vocab_size=4000))


def run_sm70(model: Path, out: Path, **settings) -> tuple[float, list[dict]]:
    from sm70.config import load_config
    from sm70.eval.run import EvalConfig, evaluate

    start = time.perf_counter()
    evaluate(load_config(EvalConfig, model=str(model), out=str(out), **settings))
    seconds = time.perf_counter() - start
    return seconds, [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


def run_lmeval(model: Path, folder: Path, name: str, batch_size: int) -> tuple[float, list[list[float]]]:
    from sm70.eval import lmeval

    start = time.perf_counter()
    logliks = lmeval.run(model, folder, [name], batch_size=batch_size)[name]
    return time.perf_counter() - start, logliks


def compare(label: str, ours: tuple[float, list[dict]], theirs: tuple[float, list[list[float]]], keys) -> float:
    (t_ours, rows), (t_theirs, ref) = ours, theirs
    assert len(rows) == len(ref), (len(rows), len(ref))
    differ = sum(1 for row, lls, k in zip(rows, ref, keys)
                 if row["prediction"] != k[max(range(len(lls)), key=lambda i: (lls[i], -i))])
    worst = max(abs(a - b) for row, lls in zip(rows, ref) for a, b in zip(row["logliks"], lls))
    ratio = t_theirs / t_ours
    print(f"{label}: lm-eval {t_theirs:.1f} s, sm70 eval {t_ours:.1f} s, speed ratio {ratio:.2f}x, "
          f"predictions differing {differ}/{len(rows)}, max loglik diff {worst:.2e}", flush=True)
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    args = parser.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from sm70.eval import lmeval
    from sm70.eval.tasks import load_task

    medqa_file = DATA / "medqa_usmle" / "phrases_no_exclude_test.jsonl"
    if not medqa_file.is_file():
        sys.exit(f"{medqa_file}: not found (the real MedQA test file is needed)")
    n, bs = args.items, args.batch_size
    print(f"model {args.model}, items {n}, batch size {bs}, torch threads {torch.get_num_threads()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = build_model(tmp, args.model)
        tasks = tmp / "lmeval_tasks"

        medqa = load_task("medqa", medqa_file)
        items, shots = medqa[:n], medqa[n:n + 5]  # shots: test items outside the scored ones, first_n
        lmeval.write_task(tasks, "bench_medqa", "medqa", items, shots, "option-text")
        theirs = run_lmeval(model, tasks, "bench_medqa", bs)
        ours = run_sm70(model, tmp / "medqa", task="medqa", data=str(medqa_file), limit=n, shots=5,
                        shots_from=str(medqa_file), prompt="option-text", batch_size=bs)
        medqa_ratio = compare("MedQA 5-shot option-text", ours, theirs, [list(i.options) for i in items])

        pubmedqa = load_task("pubmedqa", DATA / "pubmedqa")[:n]
        lmeval.write_task(tasks, "bench_pubmedqa", "pubmedqa", pubmedqa, [])
        theirs = run_lmeval(model, tasks, "bench_pubmedqa", bs)
        ours = run_sm70(model, tmp / "pubmedqa", task="pubmedqa", data=str(DATA / "pubmedqa"), limit=n,
                        prompt="lm-eval", batch_size=bs)
        compare("PubMedQA 0-shot letter", ours, theirs, [list(i.options) for i in pubmedqa])
    print(f"MedQA 5-shot option-text speed ratio (lm-eval / sm70 eval, {args.model}): {medqa_ratio:.2f}x")


if __name__ == "__main__":
    main()
