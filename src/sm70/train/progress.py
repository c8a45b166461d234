"""What a run shows and leaves behind while it trains: a progress bar (loss, tokens/s, ETA),
`metrics.jsonl` (one line per log or evaluation) and, at the end, the loss-curve PNG."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from sm70.atomic import atomic_path


def peak_memory_gb() -> float:
    """Peak accelerator memory on CUDA; peak resident memory of this process on the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def truncate_metrics(path: Path, after_step: int) -> None:
    """On resume, forget what was logged past the checkpoint: those steps are trained again."""
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= after_step]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in keep))


def run_log_callback(metrics_path: Path, collator, world_size: int = 1):
    from tqdm.auto import tqdm
    from transformers import TrainerCallback

    class RunLog(TrainerCallback):
        """Main process only: bar + metrics.jsonl. Tokens/s counts real tokens, never padding."""

        def on_train_begin(self, args, state, control, **kw):
            self.bar = None
            if state.is_world_process_zero:
                self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step",
                                file=sys.stderr, dynamic_ncols=True)
            self.mark = (time.perf_counter(), collator.tokens)
            self.rate = 0.0

        def on_step_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero or not logs:
                return
            record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
            if "loss" in logs:
                now, tokens = time.perf_counter(), collator.tokens
                self.rate = (tokens - self.mark[1]) * world_size / max(now - self.mark[0], 1e-9)
                self.mark = (now, tokens)
                record.update(loss=logs["loss"], lr=logs.get("learning_rate"), tokens_per_s=round(self.rate, 1))
            if "eval_loss" in logs:
                record["val_loss"] = logs["eval_loss"]
            if len(record) == 2:
                return
            record["peak_memory_gb"] = round(peak_memory_gb(), 3)
            with open(metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
            if self.bar is not None:
                shown = {k: f"{record[k]:.4g}" for k in ("loss", "val_loss") if k in record}
                self.bar.set_postfix(**shown, tok_s=f"{self.rate:.0f}")

        def on_train_end(self, args, state, control, **kw):
            if self.bar is not None:
                self.bar.close()

    return RunLog()


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def plot_loss(metrics: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for key, style in (("loss", "-"), ("val_loss", "o-")):
        points = [(m["step"], m[key]) for m in metrics if m.get(key) is not None]
        if points:
            ax.plot(*zip(*points), style, label=key.replace("_", " "), markersize=3)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (completion tokens)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
