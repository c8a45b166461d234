"""Packing without cross-contamination: a packed batch gives the same loss as the same examples
padded one per row, on the real 4-bit model."""

from __future__ import annotations

import pytest

from sm70.model.bnb import keep_training_layout
from sm70.model.load import load_model, load_tokenizer
from sm70.train.examples import tokenize
from sm70.train.packing import PackedCollator, pack, singles


@pytest.fixture(scope="module")
def setup(tiny_model, medical_rows):
    import torch
    from peft import LoraConfig, get_peft_model

    tokenizer = load_tokenizer(tiny_model)
    torch.manual_seed(0)
    base = load_model(tiny_model, quant="nf4")
    keep_training_layout(base)  # as training does: the no-grad tests below must not change the gradient path
    model = get_peft_model(base,
                           LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", init_lora_weights=False))
    model.eval()
    examples, _ = tokenize(medical_rows(copies=1), tokenizer, max_length=256)
    return tokenizer, model, examples


def test_rows_hold_every_example_once_within_max_length(setup):
    _, _, examples = setup
    rows = pack(examples, 256)
    assert sorted(e.id for r in rows for e in r.examples) == sorted(e.id for e in examples)
    assert all(len(r) <= 256 for r in rows)
    assert len(rows) < len(examples) / 2  # short items share rows


def loss(model, collator, rows):
    import torch

    with torch.no_grad():
        return model(**collator([r.features() for r in rows])).loss.item()


def test_packed_loss_equals_unpacked_loss(setup):
    tokenizer, model, examples = setup
    collator = PackedCollator(tokenizer.pad_token_id)
    packed = loss(model, collator, pack(examples, 256))
    unpacked = loss(model, collator, singles(examples))
    assert packed == pytest.approx(unpacked, rel=1e-4, abs=1e-4)


def test_restarted_positions_alone_leak_across_examples(setup):
    """The control that shows the mask matters: sdpa without it attends across examples."""
    tokenizer, model, examples = setup
    leaky = loss(model, PackedCollator(tokenizer.pad_token_id, attention="position_ids"), pack(examples, 256))
    clean = loss(model, PackedCollator(tokenizer.pad_token_id), singles(examples))
    assert abs(leaky - clean) > 1e-3


def test_collator_counts_real_tokens_not_padding(setup):
    tokenizer, _, examples = setup
    collator = PackedCollator(tokenizer.pad_token_id)
    batch = collator([r.features() for r in singles(examples[:3])])
    assert collator.tokens == sum(len(e) for e in examples[:3]) < batch["input_ids"].numel()


def test_varlen_attention_equals_the_block_diagonal_mask(setup):
    """sdpa_varlen (each example through sdpa on its own, no mask) gives the mask's loss and the
    same gradient for every LoRA weight, on packed rows and on padded single rows."""
    import torch

    from sm70.train import attention

    tokenizer, model, examples = setup
    attention.register()

    def loss_and_grads(rows, layout, implementation):
        model.set_attn_implementation(implementation)
        model.zero_grad()
        out = model(**PackedCollator(tokenizer.pad_token_id, attention=layout)([r.features() for r in rows]))
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return out.loss.item(), grads

    try:
        for rows in (pack(examples, 256), singles(examples[:5])):
            masked, want = loss_and_grads(rows, "mask", "sdpa")
            varlen, got = loss_and_grads(rows, "position_ids", attention.NAME)
            assert varlen == pytest.approx(masked, rel=1e-5, abs=1e-6)
            assert got.keys() == want.keys() and len(got) > 0
            for name, grad in want.items():
                torch.testing.assert_close(got[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    finally:
        model.set_attn_implementation("sdpa")
        model.zero_grad()
