"""`sm70 merge`: the merged model computes what base + adapter computes."""

from __future__ import annotations

import json

from sm70.config import load_config
from sm70.model.load import load_model, load_tokenizer
from sm70.train.merge import MergeConfig, merge


def test_merged_logits_match_base_plus_adapter(trained_run, tiny_model, tmp_path):
    import torch

    out = merge(load_config(MergeConfig, base=str(tiny_model), adapter=str(trained_run / "adapter"),
                            out=str(tmp_path / "merged")))
    assert (out / "model.safetensors").is_file() and (out / "chat_template.jinja").is_file()
    assert "quantization_config" not in json.loads((out / "config.json").read_text())  # never merged into 4-bit

    tokenizer = load_tokenizer(out)
    batch = tokenizer(["Question: Which vitamin deficiency causes scurvy?\nA. Vitamin A\nB. Vitamin C\nAnswer:",
                       "What is the mechanism of metformin?"], return_tensors="pt", padding=True)
    with torch.no_grad():
        merged = load_model(out)(**batch).logits
        stacked = load_model(tiny_model, adapter=trained_run / "adapter")(**batch).logits
        base = load_model(tiny_model)(**batch).logits
    torch.testing.assert_close(merged, stacked, rtol=1e-4, atol=1e-4)
    assert (merged - base).abs().max() > 1e-2  # the adapter is not a no-op, so the match means something
