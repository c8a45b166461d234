"""The labelled-positions loss equals the model's own loss, in value and in every LoRA gradient."""

from __future__ import annotations

import pytest

from tests.train.conftest import make_train_config


@pytest.mark.parametrize("packing", [True, False])
def test_chunked_loss_equals_the_models_own(tiny_model, medical_data, tmp_path, packing):
    import torch

    from sm70.train.sft import build_trainer

    trainer, _ = build_trainer(make_train_config(tiny_model, medical_data, tmp_path / "out", packing=packing,
                                                 quant="none", lora_dropout=0.0, micro_batch=4), verbose=False)
    model = trainer.model
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    n_items = (batch["labels"][:, 1:] != -100).sum()
    losses, grads = [], []
    for chunk in (0, 7):  # 0: the model's own loss; 7: many chunks, the last one short
        trainer.loss_chunk = chunk
        model.zero_grad()
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=n_items)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert torch.allclose(losses[0], losses[1], atol=1e-5), losses
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-5, rtol=1e-4), name
    # The output layer is back in place: generation and saving see the ordinary model.
    assert isinstance(model.get_output_embeddings(), torch.nn.Linear)


def test_chunked_loss_casts_hidden_states_to_the_output_layer_dtype():
    """accelerate returns the forward's outputs in fp32 under mixed precision and FSDP; the output layer
    stays bf16 where nothing upcast it (no prepare_model_for_kbit_training: FSDP, quant=none)."""
    import torch

    from sm70.train.loss import chunked_loss

    torch.manual_seed(0)
    hidden = torch.randn(2, 6, 8, requires_grad=True)
    head = torch.nn.Linear(8, 11, bias=False).to(torch.bfloat16)
    labels = torch.randint(0, 11, (2, 6))
    loss = chunked_loss(hidden, labels, head, chunk=4)
    loss.backward()
    expected = torch.nn.functional.cross_entropy(head(hidden[:, :-1].bfloat16()).float().flatten(0, 1),
                                                 labels[:, 1:].flatten())
    assert loss.dtype == torch.float32 and torch.allclose(loss, expected, atol=1e-3)
    assert hidden.grad is not None and hidden.grad.dtype == torch.float32


def test_bf16_training_without_quantization_runs(tiny_model, medical_data, tmp_path):
    """compute_dtype=bfloat16 quant=none: the model, its output layer and the loss in bf16 (CPU autocast)."""
    import math

    from sm70.train.sft import build_trainer

    trainer, _ = build_trainer(make_train_config(tiny_model, medical_data, tmp_path / "out", quant="none",
                                                 compute_dtype="bfloat16", max_steps=2, eval_steps=100,
                                                 save_steps=100), eval_on_start=False, verbose=False)
    result = trainer.train()
    assert trainer.state.global_step == 2 and math.isfinite(result.training_loss)
