"""Mixing sources to a target size by weight, and the train/validation split; both seeded.

A source's share of the output is proportional to weight x rows kept. Without `target_rows` the
output has round(weight x kept) rows of each source; with it, the shares are scaled to sum to
exactly `target_rows`. A share below the rows kept is a seeded sample; above it, every row is
repeated and the remainder sampled, so `weight: 2` means each row twice.

The split is a hash of the row id, so a row stays on the same side when the mix changes, and the
copies of a repeated row never straddle train and validation.
"""

from __future__ import annotations

import hashlib

import numpy as np


def quotas(kept: dict[str, int], weights: dict[str, float], target: int | None) -> dict[str, int]:
    shares = {name: weights[name] * n for name, n in kept.items()}
    total = sum(shares.values())
    if target is None or total == 0:
        return {name: round(share) for name, share in shares.items()}
    exact = {name: target * share / total for name, share in shares.items()}
    out = {name: int(x) for name, x in exact.items()}
    # Largest remainders take the rows that rounding down left over, so the sum is exactly `target`.
    for name in sorted(exact, key=lambda k: (out[k] - exact[k], k))[: target - sum(out.values())]:
        out[name] += 1
    return out


def copies(n: int, quota: int, seed: int, name: str) -> np.ndarray:
    """How many times each of a source's `n` kept rows goes into the output."""
    counts = np.full(n, quota // n if n else 0, dtype=np.uint32)
    extra = quota - int(counts.sum())
    if n and extra:
        rng = np.random.default_rng([seed, int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")])
        counts[rng.choice(n, size=extra, replace=False)] += 1
    return counts


def is_validation(row_id: str, seed: int, fraction: float) -> bool:
    if fraction <= 0:
        return False
    digest = hashlib.blake2b(f"{seed}:{row_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") < fraction * 2**64
