"""The causal-LM loss computed only where there is a label, a chunk of positions at a time.

A model's own loss builds fp32 logits for every position of the batch (micro-batch 8 x 512 tokens x
a 49,152-token vocabulary is 0.8 GB, and as much again for their gradient and log-softmax), although
with completion-only labels most positions are prompt and are thrown away. Here the model runs with
its output layer switched off, the hidden states of labelled positions are gathered, and the output
layer + cross-entropy run over them in chunks under activation checkpointing, so that only one
chunk's logits exist at a time, in forward and in backward (the idea of Liger's fused linear
cross-entropy, on plain PyTorch so it runs on the CPU too). The value is the model's own loss: the
same sum over labelled positions, divided by the same count.
"""

from __future__ import annotations

IGNORE = -100


def chunked_loss(hidden, labels, head, chunk: int, num_items=None):
    """Sum of next-token cross-entropy over labelled positions / `num_items` (or their count)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    targets = labels[:, 1:]
    keep = targets != IGNORE
    states = hidden[:, :-1][keep]
    targets = targets[keep]

    # The output layer's own dtype: under mixed precision and FSDP accelerate hands back the forward's
    # outputs in fp32, while a bf16 output layer stays bf16 unless prepare_model_for_kbit_training upcast it.
    dtype = head.weight.dtype if getattr(head, "weight", None) is not None else hidden.dtype

    def piece(h, t):
        return F.cross_entropy(head(h.to(dtype)).float(), t, reduction="sum")

    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, states.shape[0], chunk):
        h, t = states[start:start + chunk], targets[start:start + chunk]
        total = total + (checkpoint(piece, h, t, use_reentrant=False) if torch.is_grad_enabled() else piece(h, t))
    count = num_items if num_items is not None else keep.sum()
    return total / count
