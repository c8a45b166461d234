"""Crash-safe checkpoints: every checkpoint is written into a hidden staging directory and renamed
to `checkpoint-N` only once complete, so a `kill -9` at any moment leaves either a whole checkpoint
or none. Resuming picks the newest directory that has every file a resume needs."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from sm70.atomic import fsync_path

# What transformers' Trainer needs to restore adapter, optimizer, scheduler, RNG and data position:
# one process or DDP write the adapter and optimizer.pt; FSDP writes them sharded, as
# torch.distributed.checkpoint folders (each complete once its .metadata is written, last).
COMMON = ("scheduler.pt", "trainer_state.json")
LAYOUTS = {
    "replicated": ("adapter_model.safetensors", "adapter_config.json", "optimizer.pt"),
    "fsdp": ("pytorch_model_fsdp_0/.metadata", "optimizer_0/.metadata"),
}
NAME = re.compile(r"checkpoint-(\d+)")


def is_complete(d: Path) -> bool:
    return (all((d / f).is_file() for f in COMMON) and any(d.glob("rng_state*.pth"))
            and any(all((d / f).is_file() for f in files) for files in LAYOUTS.values()))


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first (by step, not mtime)."""
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = NAME.fullmatch(d.name)
        if m and d.is_dir() and is_complete(d):
            found.append((int(m.group(1)), d))
    return [d for _, d in sorted(found)]


def newest_checkpoint(root: Path) -> Path | None:
    found = complete_checkpoints(root)
    return found[-1] if found else None


def prune(root: Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints; drop older ones and stale staging leftovers."""
    for d in complete_checkpoints(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(d, ignore_errors=True)
    for d in root.glob(".staging-*"):
        shutil.rmtree(d, ignore_errors=True)


def atomic_trainer_class():
    """transformers.Trainer whose checkpoints appear atomically (imported lazily: torch is heavy)."""
    from transformers import Trainer

    class AtomicCheckpointTrainer(Trainer):
        keep_checkpoints = 2
        loss_chunk = 0  # > 0: sm70.train.loss computes the loss at labelled positions only
        _staging: str | None = None

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not self.loss_chunk or "labels" not in inputs:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            from sm70.model.head import output_layer_off
            from sm70.train.loss import chunked_loss

            labels = inputs["labels"]
            features = {k: v for k, v in inputs.items() if k != "labels"}
            with output_layer_off(self.accelerator.unwrap_model(model)) as head:
                hidden = model(**features).logits
            loss = chunked_loss(hidden, labels, head, self.loss_chunk, num_items_in_batch)
            # As Trainer.compute_loss: the item count was summed over processes, and DDP averages gradients.
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            return (loss, {}) if return_outputs else loss  # {}: prediction_step finds no logits

        def _get_output_dir(self, trial):
            # Trainer writes `<run_dir>/checkpoint-N`; during a save, run_dir is the staging directory.
            return self._staging or super()._get_output_dir(trial)

        def _save_checkpoint(self, model, trial):
            root = Path(self.args.output_dir)
            name = f"checkpoint-{self.state.global_step}"
            self._staging = str(root / f".staging-{self.state.global_step}")
            try:
                super()._save_checkpoint(model, trial)
            finally:
                self._staging = None
            # Every rank writes its own RNG state into the staging directory; rename after all did.
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                staged = root / f".staging-{self.state.global_step}" / name
                for f in staged.rglob("*"):
                    fsync_path(f)
                shutil.rmtree(root / name, ignore_errors=True)
                os.replace(staged, root / name)
                fsync_path(root)
                prune(root, self.keep_checkpoints)
            self.accelerator.wait_for_everyone()

    return AtomicCheckpointTrainer
