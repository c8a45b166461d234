"""`sm70 train processes=2 sharding=fsdp`: FSDP2 on two real CPU processes (gloo), started by sm70
itself, with the real 4-bit NF4 base: it trains, saves the adapter from every rank, writes sharded
checkpoints that resume=true continues after a kill -9, and prunes them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SETTINGS = ["processes=2", "sharding=fsdp", "micro_batch=2", "max_length=256", "lr=1e-3", "logging_steps=1"]


def command(model, data, out, *extra) -> list[str]:
    return [sys.executable, "-m", "sm70.cli", "train", f"model={model}", f"data={data}", f"out={out}", *SETTINGS,
            *extra]


def env() -> dict:
    # The training processes import sm70 from the same tree as this test.
    path = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONPATH=path)


def run(cmd: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env())
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done


def adapter_tensors(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(out / "adapter" / "adapter_model.safetensors")


@pytest.mark.slow
def test_fsdp_two_processes_train_save_and_prune(tiny_model, medical_data, tmp_path):
    out = tmp_path / "fsdp"
    done = run(command(tiny_model, medical_data, out, "max_steps=6", "save_steps=2", "eval_steps=6",
                       "keep_checkpoints=2"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["steps"] == 6
    dist = manifest["distributed"]
    assert dist["strategy"] == "fsdp" and dist["world_size"] == 2
    assert len(dist["peak_memory_gb_per_process"]) == 2 and all(p > 0 for p in dist["peak_memory_gb_per_process"])
    assert done.stdout.count("adapter written to") == 1
    # Sharded checkpoints, recognised as complete, pruned to the newest two.
    from sm70.train.checkpoints import complete_checkpoints

    kept = complete_checkpoints(out / "checkpoints")
    assert [d.name for d in kept] == ["checkpoint-4", "checkpoint-6"]
    assert (kept[-1] / "pytorch_model_fsdp_0" / ".metadata").is_file()
    assert (kept[-1] / "optimizer_0" / ".metadata").is_file()
    assert {p.name for p in kept[-1].glob("rng_state*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}
    # The adapter holds every LoRA matrix, whole (not one rank's shard), and loads onto the base.
    tensors = adapter_tensors(out)
    assert len(tensors) == 2 * 7 * 2  # layers x linear layers x (A, B)
    a = tensors["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"]
    assert a.shape == (16, 128)
    from sm70.model.load import load_model

    model = load_model(tiny_model, adapter=out / "adapter")
    assert any("lora_A" in n for n, _ in model.named_parameters())


def test_paged_8bit_optimizer_is_refused_under_fsdp(tiny_model, medical_data, tmp_path):
    from sm70.config import load_config
    from sm70.errors import Sm70Error
    from sm70.train import distributed
    from sm70.train.sft import TrainConfig

    cfg = load_config(TrainConfig, model=str(tiny_model), data=str(medical_data), out=str(tmp_path / "o"),
                      sharding="fsdp", processes=2, optim="paged_adamw_8bit")
    with pytest.raises(Sm70Error, match="cannot be checkpointed under FSDP"):
        distributed.optimizer(cfg, cuda=True, fsdp=True)
    auto = cfg.model_copy(update={"optim": "auto"})
    assert distributed.optimizer(auto, cuda=True, fsdp=True) == "adamw_torch"
    assert distributed.optimizer(auto, cuda=True, fsdp=False) == "paged_adamw_8bit"


@pytest.mark.slow
def test_fsdp_kill_9_then_resume_matches_an_uninterrupted_run(tiny_model, medical_data, tmp_path):
    """kill -9 of the whole process group after a checkpoint, then resume=true: the step count continues
    from the checkpoint and the final adapter equals an uninterrupted run's. Tolerance 1e-5: both runs
    do the same float operations in the same order on the CPU (gloo reduces in a fixed order, the RNG
    of every rank is restored from its rng_state_N.pth), so only a different summation schedule after
    the restore could separate them. Measured here: 0.0."""
    extra = ["max_steps=10", "save_steps=2", "eval_steps=10", "keep_checkpoints=2"]
    whole = tmp_path / "whole"
    run(command(tiny_model, medical_data, whole, *extra))

    out = tmp_path / "killed"
    proc = subprocess.Popen(command(tiny_model, medical_data, out, *extra), cwd=ROOT, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not (out / "checkpoints" / "checkpoint-4").is_dir() and proc.poll() is None:
            assert time.time() < deadline, "no checkpoint-4 within 300 s"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the launcher, torch's agent and both workers
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    # The workers, in sessions of their own, died with their parents: nothing moves after the kill.
    saved = sorted(p.name for p in (out / "checkpoints").iterdir())
    time.sleep(3)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == saved
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"

    done = run(command(tiny_model, medical_data, out, *extra, "resume=true"))
    assert "resuming from" in done.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    resumed = int(Path(manifest["resumed_from"]).name.split("-")[1])
    assert manifest["status"] == "complete" and 4 <= resumed < 10 and manifest["steps"] == 10
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and max(steps) == 10
    import torch

    a, b = adapter_tensors(whole), adapter_tensors(out)
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"resumed vs uninterrupted adapter: max |difference| {worst:.1e}")
    assert worst <= 1e-5, worst
    assert any(not torch.equal(a[k], torch.zeros_like(a[k])) for k in a if "lora_B" in k)  # it trained


@pytest.mark.slow
def test_fsdp_two_processes_on_smollm2(smollm2, medical_data, tmp_path):
    """The real model (30 layers, tied embeddings, 49K vocabulary) in 4-bit under FSDP2: two steps
    lower the validation loss and the adapter covers every layer. About two minutes on 2 CPU cores."""
    out = tmp_path / "smollm2"
    run(command(smollm2, medical_data, out, "max_steps=2", "save_steps=2", "eval_steps=2", "max_eval_rows=4",
                "lr=2e-4", "warmup_ratio=0"), timeout=900)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["distributed"]["world_size"] == 2
    evals = [json.loads(line)["val_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line).get("val_loss") is not None]
    assert len(evals) == 2 and evals[-1] < evals[0]
    assert len(adapter_tensors(out)) == 30 * 7 * 2


@pytest.mark.slow
def test_fsdp_trains_the_same_adapter_as_data_parallel(tiny_model, medical_data, tmp_path):
    """Sharding changes where the numbers live, not what they are: FSDP2 and DDP on the same two CPU
    processes give the same losses and the same adapter (measured: bit-identical on the tiny model)."""
    extra = ["max_steps=4", "save_steps=4", "eval_steps=4", "lora_dropout=0"]
    run(command(tiny_model, medical_data, tmp_path / "fsdp", *extra))
    ddp = [a for a in command(tiny_model, medical_data, tmp_path / "ddp", *extra) if a != "sharding=fsdp"]
    run(ddp)
    assert json.loads((tmp_path / "ddp" / "manifest.json").read_text())["distributed"]["strategy"] == "ddp"
    a, b = adapter_tensors(tmp_path / "fsdp"), adapter_tensors(tmp_path / "ddp")
    assert a.keys() == b.keys()
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= 1e-6, worst
