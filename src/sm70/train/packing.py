"""Packing without cross-contamination.

Examples are packed best-fit-decreasing into rows of at most `max_length` tokens, so a batch of 8
rows carries almost no padding. Each row gets position ids that restart at every example and a
block-diagonal causal mask (4D, one block per example), so no token attends across an example
boundary. Position ids alone are not enough: with sdpa on CPU, a restarted position does not stop
attention to the previous example (measured: logits off by up to 2.2), hence the explicit mask.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from sm70.train.examples import IGNORE, Example


@dataclass
class Row:
    examples: list[Example] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(e) for e in self.examples)

    def features(self) -> dict:
        ids, labels, positions, segments = [], [], [], []
        for k, e in enumerate(self.examples):
            ids += e.input_ids
            labels += e.labels
            positions += range(len(e))
            segments += [k] * len(e)
        return {"input_ids": ids, "labels": labels, "position_ids": positions, "segments": segments}


def pack(examples: list[Example], max_length: int) -> list[Row]:
    """Best-fit decreasing: each example goes to the fullest row that still has room for it."""
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i]), i))
    rows: list[Row] = []
    free: list[tuple[int, int]] = []  # (room left, row index), sorted
    for i in order:
        n = len(examples[i])
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            room, r = free.pop(at)
        else:
            room, r = max_length, len(rows)
            rows.append(Row())
        rows[r].examples.append(examples[i])
        bisect.insort(free, (room - n, r))
    return rows


def singles(examples: list[Example]) -> list[Row]:
    """One example per row (packing off): the padded baseline layout."""
    return [Row([e]) for e in examples]


class PackedCollator:
    """Pads a list of row features to the longest row and builds the attention inputs.

    `attention="mask"`: a boolean (batch, 1, L, L) block-diagonal causal mask (sdpa, eager).
    `attention="position_ids"`: no mask; the examples' boundaries are where the position ids restart.
    sdpa_varlen reads them in every row; transformers' flash_attention_2/3 reads them only when the
    batch is one row (so TrainConfig refuses flash + packing at micro_batch > 1).
    Padding forms its own block, so no query row is fully masked (sdpa would return NaN there).
    Counts the real (non-padding) tokens it has served, for the tokens/s figure.
    """

    def __init__(self, pad_id: int, attention: str = "mask", width: int | None = None):
        self.pad_id = pad_id
        self.attention = attention
        self.width = width  # pad every batch to this width: packed rows are nearly full anyway, and one
        self.tokens = 0     # fixed shape lets the CPU kernels reuse their plans from step to step

    def __call__(self, features: list[dict]) -> dict:
        import torch

        width = max(max(len(f["input_ids"]) for f in features), self.width or 0)
        batch = {k: [] for k in ("input_ids", "labels", "position_ids", "segments")}
        for f in features:
            pad = width - len(f["input_ids"])
            self.tokens += len(f["input_ids"])
            batch["input_ids"].append(f["input_ids"] + [self.pad_id] * pad)
            batch["labels"].append(f["labels"] + [IGNORE] * pad)
            batch["position_ids"].append(f["position_ids"] + list(range(pad)))
            batch["segments"].append(f["segments"] + [-1] * pad)
        out = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
        segments = out.pop("segments")
        if self.attention == "mask":
            same = segments[:, :, None] == segments[:, None, :]
            causal = torch.ones(width, width, dtype=torch.bool).tril()
            out["attention_mask"] = (same & causal)[:, None]
        return out
