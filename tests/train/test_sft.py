"""A short real QLoRA run: what it leaves behind, and that it learns."""

from __future__ import annotations

import json

import pytest

from sm70.errors import Sm70Error
from sm70.model.load import config_hash
from sm70.train.sft import train


def test_val_loss_goes_down(trained_run):
    metrics = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    val = [m["val_loss"] for m in metrics if "val_loss" in m]
    assert metrics[0]["step"] == 0 and len(val) >= 3
    assert val[-1] < val[0] - 0.1
    train_rows = [m for m in metrics if "loss" in m]
    assert all(m["tokens_per_s"] >= 0 and m["peak_memory_gb"] > 0 and m["lr"] is not None for m in train_rows)


def test_outputs_follow_the_contract(trained_run, tiny_model, medical_data):
    adapter = trained_run / "adapter"
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "chat_template.jinja"):
        assert (adapter / name).is_file(), name
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 16
    assert (trained_run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    kept = sorted(p.name for p in (trained_run / "checkpoints").iterdir())
    assert kept == ["checkpoint-12", "checkpoint-8"]  # keep_checkpoints=2, no staging leftovers
    manifest = json.loads((trained_run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["steps"] == 12
    assert manifest["model"]["config_hash"] == config_hash(tiny_model)
    assert len(manifest["data"]["train.jsonl"]) == 64 and manifest["versions"]["peft"]
    assert manifest["final"]["val_loss"] is not None and manifest["config"]["quant"] == "nf4"


def test_the_adapter_is_4bit_trained_and_nonzero(trained_run):
    from safetensors.torch import load_file

    weights = load_file(trained_run / "adapter" / "adapter_model.safetensors")
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert len(lora_b) == 2 * 7 and all(t.abs().max() > 0 for t in lora_b)  # 2 layers x all 7 linears


def test_an_earlier_run_is_not_overwritten(trained_run, tiny_model, medical_data):
    from sm70.config import load_config
    from sm70.train.sft import TrainConfig

    cfg = load_config(TrainConfig, model=str(tiny_model), data=str(medical_data), out=str(trained_run))
    with pytest.raises(Sm70Error, match="earlier run; pass resume=true"):
        train(cfg)


@pytest.mark.parametrize("attn, packing, micro_batch, ok", [
    ("flash_attention_2", True, 4, False),   # transformers splits packed rows only at batch size 1
    ("flash_attention_2", True, 1, True),
    ("flash_attention_2", False, 4, True),   # one example per row: causal attention never reaches the padding
    ("sdpa_varlen", True, 4, True),          # splits every row itself
])
def test_flash_attention_with_packing_needs_one_row_per_batch(attn, packing, micro_batch, ok):
    from sm70.config import load_config
    from sm70.train.sft import TrainConfig

    settings = dict(model="m", data="d", attn_implementation=attn, packing=packing, micro_batch=micro_batch)
    if ok:
        load_config(TrainConfig, **settings)
    else:
        with pytest.raises(Sm70Error, match="micro_batch=1"):
            load_config(TrainConfig, **settings)
