"""How sure a benchmark number is: accuracy with its uncertainty, and paired tests between runs.

A MedQA accuracy of 60.7 on 1,273 items carries a 95% interval about 5 points wide; two models
scored on the same items differ far less by chance than two independent samples would, which is
why `sm70 compare` uses paired statistics (bootstrap over items, McNemar on discordant pairs).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from sm70.errors import Sm70Error

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval (Wilson 1927; Newcombe 1998 method 3, no continuity correction).

    Unlike the normal approximation p +/- z*se it stays inside [0, 1] and keeps its coverage for
    small n and for p near 0 or 1 (a 20-item sample with 0 correct gets [0, 0.161], not [0, 0]).
    """
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0 or n successes the bound is exactly p; rounding would otherwise leave it a hair past p
    # (5.6e-17 above 0), which puts the point estimate outside its own interval.
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def accuracy_summary(correct: Sequence[bool]) -> dict:
    """`{n, acc, stderr, ci95}` for per-item correctness; acc/stderr/ci95 are None when n == 0.

    stderr is sqrt(p(1-p)/(n-1)), the standard error lm-evaluation-harness reports for `acc`
    (its `mean_stderr`: sample standard deviation with n-1, divided by sqrt(n)), so our figures
    sit beside its logs unchanged; it is undefined (None) for a single item.
    ci95 is the Wilson score interval, not acc +/- 1.96*stderr.
    """
    x = np.asarray(correct, dtype=bool)
    n = int(x.size)
    if n == 0:
        return {"n": 0, "acc": None, "stderr": None, "ci95": None}
    k = int(x.sum())
    p = k / n
    stderr = math.sqrt(p * (1 - p) / (n - 1)) if n > 1 else None
    lo, hi = wilson_interval(k, n)
    return {"n": n, "acc": p, "stderr": stderr, "ci95": [lo, hi]}


def _paired(a: Sequence[bool], b: Sequence[bool]) -> tuple[np.ndarray, np.ndarray]:
    xa, xb = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    if xa.shape != xb.shape or xa.ndim != 1:
        raise Sm70Error(f"paired statistics need two equal-length item lists, got {xa.shape} and {xb.shape}")
    if xa.size == 0:
        raise Sm70Error("paired statistics need at least one item scored by both runs")
    return xa, xb


def paired_bootstrap(a: Sequence[bool], b: Sequence[bool], n_boot: int = 10000, seed: int = 0) -> dict:
    """`{diff, ci95}`: diff = acc_b - acc_a, with a percentile bootstrap 95% interval.

    Items are resampled jointly (A and B keep their pairing). Each item contributes
    d = b - a in {-1, 0, +1}, so resampling n items with replacement is exactly a multinomial
    draw of how many of each kind land in the resample; drawing those three counts instead
    of n indices gives the same distribution with O(n_boot) memory instead of O(n_boot * n).
    """
    xa, xb = _paired(a, b)
    n = xa.size
    d = xb.astype(np.int8) - xa.astype(np.int8)
    probs = np.array([(d == -1).sum(), (d == 0).sum(), (d == 1).sum()], dtype=float) / n
    counts = np.random.default_rng(seed).multinomial(n, probs, size=n_boot)
    diffs = (counts[:, 2] - counts[:, 0]) / n
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"diff": float(d.mean()), "ci95": [float(lo), float(hi)]}


def mcnemar_exact(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """Exact McNemar test: `{b, c, p_value}`.

    b counts items A got right and B got wrong, c the reverse. Under "no difference" each
    discordant item is a fair coin, so p is the two-sided binomial test of b successes in b + c
    trials at 0.5; with no discordant items there is no evidence either way and p = 1.
    """
    xa, xb = _paired(a, b)
    n01 = int((xa & ~xb).sum())
    n10 = int((~xa & xb).sum())
    if n01 + n10 == 0:
        return {"b": 0, "c": 0, "p_value": 1.0}
    from scipy.stats import binomtest

    p = binomtest(n01, n01 + n10, 0.5, alternative="two-sided").pvalue
    return {"b": n01, "c": n10, "p_value": float(min(1.0, p))}
