"""Packing without cross-contamination: a packed batch gives the same loss as the same examples
padded one per row, on the real 4-bit model."""

from __future__ import annotations

import pytest

from sm70.model.load import load_model, load_tokenizer
from sm70.train.examples import tokenize
from sm70.train.packing import PackedCollator, pack, singles


@pytest.fixture(scope="module")
def setup(tiny_model, medical_rows):
    import torch
    from peft import LoraConfig, get_peft_model

    tokenizer = load_tokenizer(tiny_model)
    torch.manual_seed(0)
    model = get_peft_model(load_model(tiny_model, quant="nf4"),
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
