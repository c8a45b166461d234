"""Side-by-side training throughput: the QLoRA paper's stack against `sm70 train`.

baseline: plain transformers.Trainer + PEFT + bitsandbytes NF4, padded batches of random rows, loss on
          the whole sequence (how the QLoRA reference feeds its data).
sm70:     the `sm70 train` Trainer (sm70.train.sft.build_trainer): rows packed up to max_length, each
          example attending only to itself (sdpa_varlen), loss on the completion only.
Same tiny model shape (hidden 512, 8 layers, intermediate 1408, vocab 4000), same LoRA (r 16, alpha 32,
dropout 0.05, all linear layers), same pool of Medical Meadow rows, micro-batch 8 x max length 512, same
number of optimizer steps, adamw_torch, no gradient checkpointing. Each side runs in its own child
process so that its peak RSS is its own. Useful tokens = tokens of real examples read (padding excluded).

    .venv/bin/python bench/train_throughput.py [--steps 8] [--rows 1024] [--model tiny|smollm2]
                                               [--sm70-micro-batch 8,6]

`--model smollm2` trains the real SmolLM2-135M-Instruct (fetched by `sm70 model fetch` into
.cache/models) instead of the tiny shape, on the same rows rendered with its chat template.

`--sm70-micro-batch 8,6` also runs sm70 at 6 packed rows per step: packed rows are full, so 8 of them
hold more tokens (and activations) than 8 padded rows; fewer packed rows is the fair like-for-like memory
point. The last line gives the ratio and peak memory at each.

The CPU here is shared, so the figures are noisy; the ratio is the comparable number.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = ROOT.parent / "shared" / "data" / "medical_meadow" / "medical_meadow_small.json"
SHAPE = dict(hidden_size=512, num_layers=8, intermediate_size=1408, vocab_size=4000)
LORA = dict(r=16, alpha=32, dropout=0.05)
MICRO_BATCH, MAX_LENGTH, LR, SEED = 8, 512, 2e-4, 0


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def common_args(out: Path, steps: int) -> dict:
    """Every TrainingArguments default the comparison depends on, set the same on both sides."""
    return dict(output_dir=str(out), per_device_train_batch_size=MICRO_BATCH, gradient_accumulation_steps=1,
                max_steps=steps, learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0, seed=SEED,
                data_seed=SEED, optim="adamw_torch", use_cpu=True, bf16=False, fp16=False,
                gradient_checkpointing=False, max_grad_norm=0.3, report_to="none", disable_tqdm=True,
                dataloader_num_workers=0, logging_steps=10**6, save_strategy="no", eval_strategy="no")


def run_baseline(model: Path, data: Path, steps: int) -> dict:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments

    from sm70.model.load import load_model, load_tokenizer

    tokenizer = load_tokenizer(model)
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    texts = [r["prompt"] + r["completion"] + tokenizer.eos_token for r in rows]
    dataset = [{"input_ids": ids} for ids in tokenizer(texts, truncation=True, max_length=MAX_LENGTH)["input_ids"]]
    collate = DataCollatorForLanguageModeling(tokenizer, mlm=False)  # pads; labels = inputs, padding ignored
    net = prepare_model_for_kbit_training(load_model(model, quant="nf4"), use_gradient_checkpointing=False)
    net = get_peft_model(net, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                         target_modules="all-linear", task_type="CAUSAL_LM"))
    trainer = Trainer(model=net, args=TrainingArguments(**common_args(Path(tempfile.mkdtemp()), steps)),
                      train_dataset=dataset, data_collator=collate)
    return timed(trainer, tokenizer.pad_token_id)


def run_sm70(model: Path, data: Path, steps: int, micro_batch: int = MICRO_BATCH) -> dict:
    from sm70.config import load_config
    from sm70.train.sft import TrainConfig, build_trainer

    cfg = load_config(TrainConfig, model=str(model), data=str(data), out=tempfile.mkdtemp(), seed=SEED,
                      lora_r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                      micro_batch=micro_batch, max_length=MAX_LENGTH, max_steps=steps, lr=LR, warmup_ratio=0,
                      optim="adamw_torch", gradient_checkpointing=False, packing=True, completion_only=True,
                      eval_steps=10**6, logging_steps=10**6, save_steps=10**6)
    trainer, tokenizer = build_trainer(cfg, eval_on_start=False, verbose=False)
    return timed(trainer, tokenizer.pad_token_id)


def timed(trainer, pad_id: int) -> dict:
    """Counts the tokens of the batches actually trained on (the dataloader prefetches one more)."""
    seen = {"real": 0, "slots": 0, "widest": 0}
    step = trainer.training_step

    def counting_step(model, inputs, *args, **kwargs):
        seen["real"] += int((inputs["input_ids"] != pad_id).sum())
        seen["slots"] += inputs["input_ids"].numel()
        seen["widest"] = max(seen["widest"], inputs["input_ids"].shape[1])
        return step(model, inputs, *args, **kwargs)

    trainer.training_step = counting_step
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    return {"tokens_per_s": seen["real"] / seconds, "seconds": seconds, "real_tokens": seen["real"],
            "rows": trainer.args.per_device_train_batch_size,
            "padding": 1 - seen["real"] / max(seen["slots"], 1), "widest": seen["widest"],
            "peak_rss_gib": peak_rss_gib()}


def write_pool(out: Path, n: int, tokenizer=None) -> Path:
    """The same seeded sample of Medical Meadow rows for both sides, in the data stage's format
    (through the model's chat template when a tokenizer is given)."""
    from sm70.render import apply_template

    records = json.loads(ROWS.read_text())
    random.Random(SEED).shuffle(records)
    template = "chat" if tokenizer is not None else "medalpaca"
    rows = [{"id": f"mm-{i}", "source": "medical_meadow",
             "prompt": apply_template(template, r["instruction"], r["input"], tokenizer=tokenizer),
             "completion": r["output"]}
            for i, r in enumerate(records[:n]) if r["output"].strip()]
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:8]))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per side")
    parser.add_argument("--rows", type=int, default=1024, help="size of the shared row pool")
    parser.add_argument("--model", dest="which", choices=["tiny", "smollm2"], default="tiny",
                        help="tiny: the bench shape; smollm2: the real SmolLM2-135M-Instruct")
    parser.add_argument("--sm70-micro-batch", default=str(MICRO_BATCH),
                        help="packed rows per step for sm70, comma-separated for several runs (default 8)")
    parser.add_argument("--side", choices=["baseline", "sm70"], help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", dest="model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # child process: one side, one JSON line
        result = run_baseline(args.model, args.data, args.steps) if args.side == "baseline" else \
            run_sm70(args.model, args.data, args.steps, int(args.sm70_micro_batch))
        print("RESULT " + json.dumps(result))
        return 0
    if not ROWS.is_file():
        print(f"{ROWS}: not found (the bench needs ../shared/data)", file=sys.stderr)
        return 2
    from sm70.config import load_config
    from sm70.model.tiny import TinyModelConfig, build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="sm70-bench-"))
    if args.which == "smollm2":
        from sm70.model.fetch import FetchConfig, fetch
        from sm70.model.load import load_tokenizer

        model = fetch(load_config(FetchConfig, name="smollm2-135m-instruct",
                                  out=str(ROOT / ".cache" / "models" / "smollm2-135m-instruct")))
        data = write_pool(work / "data", args.rows, load_tokenizer(model))
    else:
        model = build_tiny_model(load_config(TinyModelConfig, out=str(work / "model"), **SHAPE))
        data = write_pool(work / "data", args.rows)
    results = {}
    runs = [("baseline", MICRO_BATCH)] + [("sm70", int(n)) for n in args.sm70_micro_batch.split(",")]
    for side, rows in runs:
        done = subprocess.run([sys.executable, __file__, "--side", side, "--model-dir", str(model), "--data", str(data),
                               "--steps", str(args.steps), "--sm70-micro-batch", str(rows)],
                              capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            print(done.stderr[-3000:], file=sys.stderr)
            return 1
        results[side if side == "baseline" else rows] = r = json.loads(lines[-1][len("RESULT "):])
        label = {"baseline": "baseline (Trainer+PEFT+NF4, padded, whole-sequence loss)",
                 "sm70": "sm70 train (packed, per-example attention, completion-only loss)"}[side]
        print(f"{label}: {r['tokens_per_s']:.0f} useful tokens/s ({r['real_tokens']} tokens in {r['seconds']:.1f} s,"
              f" {100 * r['padding']:.0f}% padding), peak RSS {r['peak_rss_gib']:.2f} GiB (widest batch"
              f" {r['rows']}x{r['widest']})")
    base = results.pop("baseline")
    print(f"train throughput ({args.which}, {args.steps} steps; baseline {MICRO_BATCH} padded rows, "
          f"{base['tokens_per_s']:.0f} useful tokens/s, peak RSS {base['peak_rss_gib']:.2f} GiB): " + "; ".join(
              f"sm70 {rows}x{MAX_LENGTH} packed {ours['tokens_per_s'] / base['tokens_per_s']:.2f}x "
              f"({ours['tokens_per_s']:.0f} tokens/s), peak RSS {ours['peak_rss_gib']:.2f} GiB"
              for rows, ours in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
