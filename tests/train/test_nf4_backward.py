"""A validation pass must not change training: bitsandbytes repacks 4-bit weights for its AVX512-BF16
CPU kernel at the first eval-mode forward, and that kernel has no backward."""

from __future__ import annotations

from tests.train.conftest import make_train_config


def test_lora_gradients_are_the_same_after_a_validation_pass(tiny_model, medical_data, tmp_path):
    import torch

    from sm70.train.sft import build_trainer

    trainer, _ = build_trainer(make_train_config(tiny_model, medical_data, tmp_path / "out", quant="nf4",
                                                 lora_dropout=0.0, micro_batch=4), verbose=False)
    model = trainer.model
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])

    def gradients():
        model.train()
        model.zero_grad()
        trainer.compute_loss(model, dict(batch)).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    before = gradients()
    model.eval()
    with torch.no_grad():
        model(**{k: v for k, v in batch.items() if k != "labels"})
    after = gradients()
    for name, g in before.items():
        assert torch.allclose(g, after[name], atol=1e-6), name
