"""QLoRA on the real model (tied embeddings, chat-templated rows), and a merge that keeps what a device
needs: tokenizer, chat template, tied weights, and the logits of base + adapter."""

from __future__ import annotations

import json

import pytest

from sm70.config import load_config
from sm70.render import apply_template

QUESTIONS = [
    ("What are the symptoms of iron-deficiency anemia?", "Fatigue, pallor, brittle nails and shortness of breath."),
    ("Which enzyme do statins inhibit?", "HMG-CoA reductase."),
    ("What is the first-line treatment for anaphylaxis?", "Intramuscular epinephrine."),
    ("What does a positive Babinski sign indicate in an adult?", "An upper motor neuron lesion."),
]


@pytest.fixture(scope="module")
def real_run(smollm2, tmp_path_factory):
    from sm70.model.load import load_tokenizer
    from sm70.train.sft import TrainConfig, train

    tok = load_tokenizer(smollm2)
    rows = [{"id": f"q{i}", "source": "test", "prompt": apply_template("chat", "Answer this question truthfully",
                                                                         q, tokenizer=tok), "completion": a}
            for i, (q, a) in enumerate(QUESTIONS)]
    data = tmp_path_factory.mktemp("real-data")
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 2))
    (data / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    out = tmp_path_factory.mktemp("real-run") / "out"
    cfg = load_config(TrainConfig, model=str(smollm2), data=str(data), out=str(out), micro_batch=2, max_length=128,
                      max_steps=3, lr=1e-3, eval_steps=3, logging_steps=1, save_steps=3, lora_r=8, lora_alpha=16)
    return train(cfg)


def test_qlora_trains_the_real_model_and_leaves_the_tied_head_alone(real_run):
    from safetensors.torch import load_file

    manifest = json.loads((real_run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["steps"] == 3 and manifest["config"]["quant"] == "nf4"
    metrics = [json.loads(line) for line in (real_run / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if m.get("loss") is not None]
    assert losses and all(0 < x < 20 for x in losses)
    weights = load_file(real_run / "adapter" / "adapter_model.safetensors")
    assert len([n for n in weights if "lora_B" in n]) == 30 * 7  # every linear of 30 layers, not lm_head
    assert not any("lm_head" in n or "embed_tokens" in n for n in weights)
    assert (real_run / "adapter" / "chat_template.jinja").is_file()


def test_merge_keeps_tokenizer_template_tied_weights_and_logits(real_run, smollm2, tmp_path):
    import torch
    from safetensors import safe_open

    from sm70.model.load import load_model, load_tokenizer
    from sm70.train.merge import MergeConfig, merge

    out = merge(load_config(MergeConfig, base=str(smollm2), adapter=str(real_run / "adapter"),
                            out=str(tmp_path / "merged")))
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and "quantization_config" not in config
    with safe_open(out / "model.safetensors", "pt") as f:
        assert "lm_head.weight" not in f.keys()  # tied: stored once, as the embedding
    assert (out / "chat_template.jinja").read_text() == (smollm2 / "chat_template.jinja").read_text()
    tok = load_tokenizer(out)
    assert tok.eos_token == "<|im_end|>"
    merged_model = load_model(out)
    assert merged_model.lm_head.weight.data_ptr() == merged_model.model.embed_tokens.weight.data_ptr()
    prompt = apply_template("chat", "Answer this question truthfully", QUESTIONS[0][0], tokenizer=tok)
    batch = tok([prompt], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        merged = merged_model(**batch).logits
        stacked = load_model(smollm2, adapter=real_run / "adapter")(**batch).logits
        base = load_model(smollm2)(**batch).logits
    torch.testing.assert_close(merged, stacked, rtol=1e-4, atol=2e-4)
    assert (merged - base).abs().max() > 1e-3  # the adapter changed something, so the match means something


def test_under_nf4_the_tied_head_stays_unquantized_and_shared(smollm2):
    """What QLoRA does to a tied lm_head: bitsandbytes quantizes the decoder's linear layers only; the
    embedding and the head that shares its weight stay in the compute dtype, one tensor, frozen."""
    import bitsandbytes as bnb
    import torch

    from sm70.model.load import load_model

    model = load_model(smollm2, quant="nf4")
    assert type(model.lm_head) is torch.nn.Linear
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert isinstance(model.model.layers[0].mlp.down_proj, bnb.nn.Linear4bit)
