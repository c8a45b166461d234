"""A 4-bit model's LoRA gradients do not depend on whether it was validated first.

bitsandbytes repacks a 4-bit weight for CPU inference on its first eval-mode call (on CPUs with
AVX512-BF16) and then sends training calls through a kernel without autograd. `keep_training_layout`
stops that; without it the second gradient below differs from the first on such CPUs."""

from __future__ import annotations

import pytest


def lora_gradients(model, batch) -> dict:
    model.zero_grad()
    model.train()
    model(**batch, labels=batch["input_ids"]).loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("validate_first", [False, True])
def test_validation_does_not_change_the_gradients(tiny_model, validate_first):
    import torch
    from peft import LoraConfig, get_peft_model

    from sm70.model.bnb import keep_training_layout
    from sm70.model.load import load_model

    torch.manual_seed(0)
    model = load_model(tiny_model, quant="nf4", dtype="float32")
    assert keep_training_layout(model) > 0
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear",
                                             init_lora_weights=False))
    batch = {"input_ids": torch.randint(3, 200, (2, 24))}
    before = lora_gradients(model, batch)
    if validate_first:
        model.eval()
        with torch.no_grad():
            model(**batch)
    after = lora_gradients(model, batch)
    assert before.keys() == after.keys() and len(before) > 0
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0, msg=name)
