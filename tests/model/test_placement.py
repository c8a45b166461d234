"""Dtype and device choices for a GPU host, checked on the CPU by standing in for torch.cuda's answers."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


@pytest.fixture
def gpu(monkeypatch):
    """`gpu(major)`: torch.cuda reports one GPU of that compute capability, where bf16 can be emulated."""
    import torch

    def make(major: int):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=major))
        monkeypatch.setattr(torch.cuda, "_check_bf16_tensor_supported", lambda device: True)  # emulation works
    return make


@pytest.mark.parametrize("major, expected", [(8, "bfloat16"), (9, "bfloat16"), (7, "float16")])
def test_auto_compute_dtype_is_bf16_only_where_the_gpu_has_it(gpu, major, expected):
    """A T4 or V100 (compute capability 7) runs bf16 only emulated: fp16 there, as QLoRA does."""
    import torch

    from sm70.model.load import default_compute_dtype

    gpu(major)
    assert default_compute_dtype() == getattr(torch, expected)


def test_auto_compute_dtype_on_the_cpu_is_fp32():
    import torch

    from sm70.model.load import default_compute_dtype

    if torch.cuda.is_available():
        pytest.skip("a CUDA host")
    assert default_compute_dtype() == torch.float32


@pytest.mark.parametrize("quant, device_map, expected", [
    ("none", None, {"": 0}),             # an unquantized model goes to the GPU too, not only NF4
    ("nf4", None, {"": 0}),
    ("none", {"": "cpu"}, {"": "cpu"}),  # the caller keeps it on the CPU (merge, export verification)
    ("nf4", False, None),                # FSDP places the shards itself
])
def test_load_model_places_the_model_on_this_process_gpu(gpu, monkeypatch, tiny_model, quant, device_map, expected):
    from transformers import AutoModelForCausalLM

    from sm70.model.load import load_model

    gpu(8)
    seen = {}

    def from_pretrained(path, **kwargs):
        seen.update(kwargs)
        return SimpleNamespace()

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    load_model(tiny_model, quant=quant, dtype="float32", device_map=device_map)
    assert seen.get("device_map") == expected
