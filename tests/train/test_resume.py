"""`kill -9` in the middle of a run, then `resume=true`, ends with the same adapter as a run that was
never interrupted (same seed): adapter, optimizer, scheduler, RNG and data position all restored."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sm70.train.checkpoints import newest_checkpoint
from sm70.train.sft import train

# The training subprocess, slowed down per optimizer step so that the test can kill it mid-run.
SLOW_TRAIN = """
import sys, time
from transformers import Trainer
step = Trainer.training_step
def slow(self, *args, **kwargs):
    loss = step(self, *args, **kwargs)
    time.sleep(0.5)
    return loss
Trainer.training_step = slow
from sm70.cli import main
sys.exit(main(sys.argv[1:]))
"""
# 14 packed rows / micro-batch 2 = 7 steps per epoch: the run crosses an epoch boundary after the resume.
SETTINGS = dict(max_steps=10, save_steps=2, eval_steps=100, logging_steps=1, micro_batch=2, max_length=256, lr=1e-3)


def adapter_weights(run: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(run / "adapter" / "adapter_model.safetensors")


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tiny_model, medical_data, tmp_path, train_config):
    import torch

    killed = tmp_path / "killed"
    script = tmp_path / "slow_train.py"
    script.write_text(SLOW_TRAIN)
    args = [f"{k}={v}" for k, v in SETTINGS.items()]
    proc = subprocess.Popen([sys.executable, str(script), "train", f"model={tiny_model}", f"data={medical_data}",
                             f"out={killed}", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while newest_checkpoint(killed / "checkpoints") is None:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    proc.kill()  # SIGKILL: no cleanup, no atexit, no flushing
    assert proc.wait() == -9
    proc.stderr.close()
    reached = newest_checkpoint(killed / "checkpoints").name
    assert reached in ("checkpoint-2", "checkpoint-4", "checkpoint-6")  # killed mid-run, before the epoch ends
    assert json.loads((killed / "manifest.json").read_text())["status"] == "running"

    train(train_config(tiny_model, medical_data, killed, resume=True, **SETTINGS))
    whole = train(train_config(tiny_model, medical_data, tmp_path / "whole", **SETTINGS))

    resumed, reference = adapter_weights(killed), adapter_weights(whole)
    assert resumed.keys() == reference.keys()
    for name in reference:
        torch.testing.assert_close(resumed[name], reference[name], rtol=1e-5, atol=1e-6, msg=name)
    assert json.loads((killed / "manifest.json").read_text())["resumed_from"].endswith(reached)
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == sorted(set(steps)) and steps[-1] == 10  # steps after the checkpoint logged once
