"""Broken model and adapter directories: a clear error naming the file before transformers or PEFT
fail deep inside with a traceback."""

from __future__ import annotations

import json
import re
import struct

import numpy as np
import pytest
from safetensors.numpy import save_file

from sm70.errors import Sm70Error
from sm70.model.load import check_adapter_dir, load_model, resolve_model_path

BASE_CONFIG = {"model_type": "llama", "hidden_size": 128, "num_hidden_layers": 2, "vocab_size": 1024}


def model_dir(tmp_path, config=BASE_CONFIG, name="base"):
    path = tmp_path / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps(config))
    save_file({"model.embed_tokens.weight": np.zeros((4, 8), np.float32)}, str(path / "model.safetensors"))
    return path


def truncate(file, keep: int | None = None, cut: int = 0):
    data = file.read_bytes()
    file.write_bytes(data[:keep] if keep is not None else data[:-cut])


def header_only(file, header: bytes):
    file.write_bytes(struct.pack("<Q", len(header)) + header)


# (id, what is done to a good model directory, the file the error names, what it says)
MODEL_BROKEN = [
    ("no-config", lambda d: (d / "config.json").unlink(), "base", "not a model directory (no config.json)"),
    ("empty-config", lambda d: (d / "config.json").write_text(""), "config.json", "not valid JSON"),
    ("config-list", lambda d: (d / "config.json").write_text("[]"), "config.json", "expected a JSON object, got list"),
    ("config-binary", lambda d: (d / "config.json").write_bytes(b"\x00\x01"), "config.json", "binary file"),
    ("config-cp1252", lambda d: (d / "config.json").write_bytes(b'{"name": "caf\xe9"}'), "config.json",
     "not valid UTF-8 at byte 13"),
    ("weights-truncated", lambda d: truncate(d / "model.safetensors", cut=10), "model.safetensors",
     "truncated: its header describes"),
    ("weights-stub", lambda d: truncate(d / "model.safetensors", keep=4), "model.safetensors",
     "truncated or not a safetensors file"),
    ("weights-empty", lambda d: truncate(d / "model.safetensors", keep=0), "model.safetensors",
     "truncated or not a safetensors file"),
    ("weights-absurd-header", lambda d: (d / "model.safetensors").write_bytes(struct.pack("<Q", 2**63) + b"{}"),
     "model.safetensors", "the header length says 9223372036854775808"),
    ("weights-html", lambda d: (d / "model.safetensors").write_bytes(b"<html><body>404 Not Found</body></html>"),
     "model.safetensors", "truncated or not a safetensors file"),
    ("weights-header-not-json", lambda d: header_only(d / "model.safetensors", b"{not json"), "model.safetensors",
     "the header is not JSON"),
    ("weights-bad-offsets", lambda d: header_only(d / "model.safetensors", b'{"w": {"data_offsets": ["a", 2]}}'),
     "model.safetensors", "data_offsets are not two integers"),
    ("index-names-missing-shard", lambda d: (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"w": "model-00002-of-00002.safetensors"}})), "model.safetensors.index.json",
     "names weight files that are not in"),
    ("index-without-map", lambda d: (d / "model.safetensors.index.json").write_text("{}"),
     "model.safetensors.index.json", "weight_map: expected an object"),
]


@pytest.mark.parametrize("damage, file, message", [c[1:] for c in MODEL_BROKEN], ids=[c[0] for c in MODEL_BROKEN])
def test_a_broken_model_directory_is_named(tmp_path, damage, file, message):
    path = model_dir(tmp_path)
    damage(path)
    with pytest.raises(Sm70Error, match=message.replace("(", r"\(").replace(")", r"\)")) as e:
        resolve_model_path(path)
    assert str(path if file == "base" else path / file) in str(e.value)


def adapter_dir(tmp_path, base_recorded: str, tensors: dict[str, tuple[int, int]]):
    path = tmp_path / "adapter"
    path.mkdir()
    (path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4,
                                                          "base_model_name_or_path": base_recorded}))
    save_file({k: np.zeros(shape, np.float32) for k, shape in tensors.items()}, str(path / "adapter_model.safetensors"))
    return path


LORA = "base_model.model.model.layers.{}.self_attn.q_proj.lora_{}.weight"
FITS = {LORA.format(0, "A"): (4, 128), LORA.format(0, "B"): (128, 4), LORA.format(1, "A"): (4, 128)}


def test_an_adapter_that_fits_passes(tmp_path):
    base = model_dir(tmp_path)
    check_adapter_dir(adapter_dir(tmp_path, str(base), FITS), base)


def test_an_adapter_recorded_for_another_base_is_refused(tmp_path):
    base = model_dir(tmp_path)
    other = model_dir(tmp_path, {**BASE_CONFIG, "hidden_size": 64}, name="other")
    adapter = adapter_dir(tmp_path, str(other), {LORA.format(0, "A"): (4, 64)})
    with pytest.raises(Sm70Error, match=r"trained for .*other \(hidden_size=64\), but the base model .* has hidden_size=128"):
        check_adapter_dir(adapter, base)


@pytest.mark.parametrize("tensors, message", [
    ({LORA.format(0, "A"): (4, 64)}, "has shape [4, 64], but the base model"),
    ({LORA.format(5, "A"): (4, 128)}, "is for layer 5, but the base model"),
])
def test_an_adapter_whose_tensors_do_not_fit_is_refused(tmp_path, tensors, message):
    base = model_dir(tmp_path)
    adapter = adapter_dir(tmp_path, "some-org/another-model", tensors)  # a hub id: only the shapes can tell
    with pytest.raises(Sm70Error, match=re.escape(message)) as e:
        check_adapter_dir(adapter, base)
    assert "adapter_model.safetensors" in str(e.value)


@pytest.mark.parametrize("damage, message", [
    (lambda a: (a / "adapter_config.json").write_text("{"), "adapter_config.json:1: not valid JSON"),
    (lambda a: (a / "adapter_config.json").write_text('"r"'), "expected a JSON object, got str"),
    (lambda a: (a / "adapter_model.safetensors").unlink(), "no adapter weights"),
    (lambda a: truncate(a / "adapter_model.safetensors", cut=100), "adapter_model.safetensors: truncated"),
])
def test_a_broken_adapter_directory_is_named(tmp_path, damage, message):
    base = model_dir(tmp_path)
    adapter = adapter_dir(tmp_path, str(base), FITS)
    damage(adapter)
    with pytest.raises(Sm70Error, match=re.escape(message)):
        check_adapter_dir(adapter, base)


def test_real_adapters_for_another_shape_fail_with_the_adapter_named(tiny_model, tmp_path):
    """Through the real from_pretrained + PEFT path: an adapter made on a differently shaped Llama."""
    import torch

    assert resolve_model_path(tiny_model) == str(tiny_model)  # the real tiny model passes every check
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # two cores shared by several test runs
    try:
        _adapters_of_another_shape(tiny_model, tmp_path)
    finally:
        torch.set_num_threads(threads)


def _adapters_of_another_shape(tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    for name, change, modules, message in [
        ("narrow", {"hidden_size": 64, "intermediate_size": 128}, ["q_proj"], "hidden_size 128"),
        ("wide-mlp", {"intermediate_size": 512}, ["down_proj"], "does not fit base model"),  # caught from PEFT
    ]:
        other = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny_model, **change))
        adapter = tmp_path / name
        get_peft_model(other, LoraConfig(r=4, target_modules=modules)).save_pretrained(adapter)
        with pytest.raises(Sm70Error, match=message) as e:
            load_model(tiny_model, adapter=adapter, dtype="float32")
        assert str(adapter) in str(e.value)
