"""The other ways to load what is served: base + LoRA adapter, and the 4-bit NF4 base."""

import json

import httpx
import pytest

from .conftest import start_server


@pytest.fixture(scope="module")
def adapter(tiny_model, tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model

    from sm70.model.load import load_model

    torch.manual_seed(0)
    model = get_peft_model(load_model(tiny_model), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                              init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter") / "lora"
    model.save_pretrained(out)
    return out


def complete(live, prompt="The patient", n=6):
    r = httpx.post(live.url + "/v1/completions", timeout=120,
                   json={"prompt": prompt, "max_tokens": n, "temperature": 0, "ignore_eos": True})
    assert r.status_code == 200, r.text
    return r.json()


def test_base_plus_adapter_is_served_and_fingerprinted(tiny_model, adapter, tmp_path):
    live = start_server(tiny_model, tmp_path, adapter=str(adapter))
    try:
        body = complete(live)
        assert body["model"] == "model+lora" and body["usage"]["completion_tokens"] == 6
        entry = json.loads(live.audit_log.read_text().splitlines()[-1])
        assert entry["adapter_fp"] and entry["model_fp"] and entry["adapter_fp"] != entry["model_fp"]
    finally:
        live.stop()


def test_nf4_base_is_served(tiny_model, tmp_path):
    pytest.importorskip("bitsandbytes")
    live = start_server(tiny_model, tmp_path, quant="nf4")
    try:
        import bitsandbytes as bnb

        assert any(isinstance(m, bnb.nn.Linear4bit) for m in live.engine.batcher.model.modules())
        assert complete(live)["usage"]["completion_tokens"] == 6
    finally:
        live.stop()
