"""Attention over packed rows, one example at a time: `attn_implementation="sdpa_varlen"`.

A packed row holds several examples. The "mask" layout hands sdpa one (L, L) block-diagonal mask
per row, and with an explicit mask the CPU kernel computes every query-key pair of the row, across
blocks and above the diagonal, then throws most of them away. Here each example (a run of position ids
that restarts at 0) goes through sdpa on its own with `is_causal=True`, so the work is the sum of
len^2 / 2 over the examples rather than L^2 per row, and no mask is built or kept for backward. This is
what flash-attention's varlen path does on a GPU; the answer is the same as the mask's (test).
"""

from __future__ import annotations

NAME = "sdpa_varlen"


def segments(position_ids) -> list[list[tuple[int, int]]]:
    """[(start, end), ...] per row: a new example starts wherever the position does not go up by one."""
    import torch

    starts = torch.ones_like(position_ids, dtype=torch.bool)
    starts[:, 1:] = position_ids[:, 1:] != position_ids[:, :-1] + 1
    width = position_ids.shape[1]
    spans = []
    for row in starts.tolist():
        at = [i for i, s in enumerate(row) if s] + [width]
        spans.append(list(zip(at[:-1], at[1:])))
    return spans


def varlen_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                     position_ids=None, **kwargs):
    """transformers' attention-function signature: query (B, H, L, D), key/value (B, Hkv, L, D);
    returns (B, L, H, D) and no weights. Without position ids (generation) the row is one example."""
    import torch
    import torch.nn.functional as F

    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    if position_ids is None or query.shape[2] != key.shape[2]:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                             is_causal=attention_mask is None and query.shape[2] > 1,
                                             scale=scaling)
        return out.transpose(1, 2).contiguous(), None
    rows = []
    for b, spans in enumerate(segments(position_ids)):
        parts = [F.scaled_dot_product_attention(query[b:b + 1, :, s:e], key[b:b + 1, :, s:e], value[b:b + 1, :, s:e],
                                                dropout_p=dropout, is_causal=True, scale=scaling)
                 for s, e in spans]
        rows.append(torch.cat(parts, dim=2) if len(parts) > 1 else parts[0])
    return torch.cat(rows, dim=0).transpose(1, 2).contiguous(), None


def no_mask(*args, **kwargs):
    """The mask builder for sdpa_varlen: the examples' boundaries come from the position ids."""
    return None


def register() -> None:
    """Makes `sdpa_varlen` a valid attn_implementation for every transformers model (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, varlen_attention)
    AttentionMaskInterface.register(NAME, no_mask)
