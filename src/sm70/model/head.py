"""Running a causal LM without its output layer, for code that needs logits at a few positions only.

A model's forward builds logits for every position (batch x length x vocabulary: for a 49,152-token
vocabulary that is most of the memory and a fifth of the compute of a small model). Training needs
them only at labelled positions, scoring only at the continuation positions; both run the model with
the output layer switched off, gather the hidden states they need, and apply the layer to those.
"""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def output_layer_off(model):
    """Within the block, the model returns its final hidden states where it would return logits.

    The forward still goes through the (possibly DDP-wrapped) model, so gradient synchronisation
    sees every trainable parameter; the output layer itself is frozen (LoRA leaves it alone)."""
    import torch

    head = model.get_output_embeddings()
    owner, name = _owner_of(model, head)
    setattr(owner, name, torch.nn.Identity())
    try:
        yield head
    finally:
        setattr(owner, name, head)


def _owner_of(model, module):
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is module:
                return parent, name
    raise ValueError("the model's output layer is not one of its submodules")
