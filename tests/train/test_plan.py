"""The memory plan against published figures, and `--plan` loading nothing heavy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sm70.config import load_config
from sm70.train.plan import plan_memory
from sm70.train.sft import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
RECIPE_70B = ROOT / "recipes" / "train" / "sm70-llama2-70b.yaml"


def plan(recipe=RECIPE_70B, **overrides):
    return plan_memory(load_config(TrainConfig, recipe, [f"{k}={v}" for k, v in overrides.items()]))


@pytest.mark.parametrize("device_gb, fits", [(48, True), (24, False), (80, True), (40, False)])
def test_70b_recipe_fits_48gb_not_24gb(device_gb, fits):
    # QLoRA 70B ~ 48 GB (LLaMA-Factory's hardware table); 4.127-bit weights alone are ~33 GiB.
    p = plan(device_memory_gb=device_gb)
    assert p.fits is fits
    assert 40 < p.total_gb < 48


def test_65b_fits_one_48gb_gpu_as_in_the_qlora_paper():
    p = plan(model="huggyllama/llama-65b", device_memory_gb=48)
    assert p.fits and p.total_gb > 35


def test_70b_fits_two_24gb_gpus_with_fsdp():
    single = plan(device_memory_gb=24)
    sharded = plan(device_memory_gb=24, processes=2, sharding="fsdp")
    assert not single.fits and sharded.fits
    assert sharded.total_gb < single.total_gb / 1.7


def test_checkpointing_shrinks_activations():
    p = plan(device_memory_gb=48)
    acts = p.activations_gb
    assert acts["with checkpointing"] < acts["without checkpointing"] / 5
    assert plan(device_memory_gb=48, gradient_checkpointing="false").total_gb > p.total_gb


def test_7b_recipe_fits_a_24gb_gpu():
    p = plan(ROOT / "recipes" / "train" / "llama2-7b.yaml")
    assert p.fits and p.device_gb == 24


def test_plan_reads_a_local_config_json(tiny_model):
    p = plan(ROOT / "recipes" / "train" / "demo.yaml", model=tiny_model, device_memory_gb=1)
    assert p.fits and p.total_gb < 1
    assert "predicted peak" in p.table() and "FITS" in p.table()


def test_cli_plan_prints_without_loading_torch_models():
    done = subprocess.run([sys.executable, "-m", "sm70.cli", "train", str(RECIPE_70B), "--plan",
                           "device_memory_gb=24"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "DOES NOT FIT" in done.stdout and "NF4+DQ 4.127 bit" in done.stdout
