"""Two-process data-parallel QLoRA through `accelerate launch` (gloo, CPU): the sharded path in CI.
The base is the real NF4 4-bit model in both processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_trains_and_writes_one_adapter(tiny_model, medical_data, tmp_path):
    out = tmp_path / "ddp"
    accelerate = Path(os.sys.executable).parent / "accelerate"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [str(accelerate), "launch", "--config_file", str(ROOT / "recipes/accelerate/ddp-cpu-2proc.yaml"),
         "--main_process_port", str(free_port()), "-m", "sm70.cli", "train", f"model={tiny_model}",
         f"data={medical_data}", f"out={out}", "max_steps=4", "save_steps=2", "eval_steps=4", "logging_steps=1",
         "micro_batch=2", "max_length=256", "lr=1e-3"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["processes"] == 2 and manifest["steps"] == 4
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    checkpoint = out / "checkpoints" / "checkpoint-4"
    assert {p.name for p in checkpoint.glob("rng_state*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    assert done.stdout.count("adapter written to") == 1  # rank 0 alone writes the outputs


@pytest.mark.slow
def test_processes_2_starts_its_own_data_parallel_processes(tiny_model, medical_data, tmp_path):
    """No launcher: `sm70 train processes=2` starts two processes itself (sharding=none: DDP)."""
    out = tmp_path / "ddp-self"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run(
        [os.sys.executable, "-m", "sm70.cli", "train", f"model={tiny_model}", f"data={medical_data}", f"out={out}",
         "processes=2", "max_steps=2", "save_steps=2", "eval_steps=2", "micro_batch=2", "max_length=256"],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["distributed"]["strategy"] == "ddp" and manifest["distributed"]["world_size"] == 2
    assert {p.name for p in (out / "checkpoints" / "checkpoint-2").glob("rng_state*.pth")} == {
        "rng_state_0.pth", "rng_state_1.pth"}
