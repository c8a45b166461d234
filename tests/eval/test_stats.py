"""Confidence intervals and paired tests against published and hand-computed values."""

import math

import numpy as np
import pytest

from sm70.errors import Sm70Error
from sm70.eval.stats import (
    accuracy_summary,
    mcnemar_exact,
    paired_bootstrap,
    wilson_interval,
)

# Newcombe RG (1998), "Two-sided confidence intervals for the single proportion: comparison of
# seven methods", Stat Med 17:857-872, Table I, method 3 (Wilson score, no continuity correction).
NEWCOMBE = [
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0000, 0.1611),
    (1, 29, 0.0061, 0.1718),
]


@pytest.mark.parametrize("x,n,lo,hi", NEWCOMBE)
def test_wilson_matches_newcombe_1998(x, n, lo, hi):
    got = wilson_interval(x, n)
    assert got == pytest.approx((lo, hi), abs=5e-5)


def test_wilson_upper_bound_for_zero_successes_by_hand():
    # x = 0: the interval is [0, z^2 / (n + z^2)]; n = 20, z = 1.96 -> 3.8415 / 23.8415 = 0.16112
    z = 1.959963984540054
    assert wilson_interval(0, 20)[1] == pytest.approx(z * z / (20 + z * z), rel=1e-12)
    assert wilson_interval(20, 20) == pytest.approx((1 - z * z / (20 + z * z), 1.0))


def test_accuracy_summary_uses_lm_eval_stderr_and_wilson():
    s = accuracy_summary([True] * 3 + [False] * 2)
    assert s["n"] == 5 and s["acc"] == pytest.approx(0.6)
    # lm-eval: sample std (ddof=1) / sqrt(n) == sqrt(p(1-p)/(n-1)) = sqrt(0.24/4)
    assert s["stderr"] == pytest.approx(math.sqrt(0.24 / 4))
    assert s["stderr"] == pytest.approx(np.std([1, 1, 1, 0, 0], ddof=1) / math.sqrt(5))
    assert s["ci95"] == pytest.approx(list(wilson_interval(3, 5)))


@pytest.mark.parametrize("correct,expected", [
    ([], {"n": 0, "acc": None, "stderr": None, "ci95": None}),
    ([True], {"n": 1, "acc": 1.0, "stderr": None}),
])
def test_accuracy_summary_edge_cases(correct, expected):
    s = accuracy_summary(correct)
    assert {k: s[k] for k in expected} == expected


@pytest.mark.parametrize("b,c,p", [
    (1, 9, 0.021484375),      # 2 * (C(10,0) + C(10,1)) / 2^10 = 22/1024
    (9, 1, 0.021484375),      # symmetric
    (0, 5, 0.0625),           # 2 / 2^5
    (3, 3, 1.0),
    (0, 0, 1.0),              # no discordant pairs: no evidence either way
    (10, 20, 0.09873714670538902),  # 2 * P(X <= 10), X ~ Bin(30, 0.5), computed with exact integers below
])
def test_mcnemar_exact(b, c, p):
    # 7 concordant pairs (both right / both wrong) must not change anything.
    a = [True] * b + [False] * c + [True] * 4 + [False] * 3
    bb = [False] * b + [True] * c + [True] * 4 + [False] * 3
    got = mcnemar_exact(a, bb)
    assert (got["b"], got["c"]) == (b, c)
    assert got["p_value"] == pytest.approx(p, rel=1e-9)


def test_mcnemar_reference_value_by_integer_arithmetic():
    tail = sum(math.comb(30, k) for k in range(11)) / 2**30
    assert mcnemar_exact([True] * 10 + [False] * 20, [False] * 10 + [True] * 20)["p_value"] == pytest.approx(2 * tail)


def test_bootstrap_contains_true_difference_and_is_reproducible():
    rng = np.random.default_rng(123)
    n = 2000
    a = rng.random(n) < 0.55
    b = np.where(rng.random(n) < 0.8, a, rng.random(n) < 0.7)  # correlated with a, higher accuracy
    r1 = paired_bootstrap(a, b, n_boot=5000, seed=7)
    r2 = paired_bootstrap(a, b, n_boot=5000, seed=7)
    assert r1 == r2
    assert r1["diff"] == pytest.approx(b.mean() - a.mean())
    lo, hi = r1["ci95"]
    assert lo < r1["diff"] < hi and lo > 0  # B is truly better here (true diff 0.2 * (0.7 - 0.55) = 0.03)
    assert lo < 0.03 < hi
    assert paired_bootstrap(a, b, n_boot=5000, seed=8)["ci95"] != r1["ci95"]


def test_bootstrap_width_matches_the_paired_standard_error():
    # The percentile interval should be about +/- 1.96 * sd(d) / sqrt(n) for d = b - a.
    rng = np.random.default_rng(0)
    a = rng.random(1000) < 0.6
    b = rng.random(1000) < 0.6
    d = b.astype(int) - a.astype(int)
    lo, hi = paired_bootstrap(a, b, n_boot=20000, seed=1)["ci95"]
    assert (hi - lo) / 2 == pytest.approx(1.96 * d.std() / math.sqrt(1000), rel=0.05)


def test_identical_runs_have_zero_difference():
    x = [True, False, True, True]
    assert paired_bootstrap(x, x) == {"diff": 0.0, "ci95": [0.0, 0.0]}


@pytest.mark.parametrize("fn", [paired_bootstrap, mcnemar_exact])
def test_paired_tests_reject_mismatched_lengths(fn):
    with pytest.raises(Sm70Error, match="equal-length"):
        fn([True, False], [True])
    with pytest.raises(Sm70Error, match="at least one item"):
        fn([], [])


def test_multinomial_bootstrap_agrees_with_resampling_item_indices():
    # The implementation draws category counts; the textbook version resamples item indices.
    rng = np.random.default_rng(5)
    a = rng.random(400) < 0.5
    b = np.where(rng.random(400) < 0.7, a, rng.random(400) < 0.65)
    idx = np.random.default_rng(9).integers(0, 400, size=(8000, 400))
    naive = np.percentile(b[idx].mean(1) - a[idx].mean(1), [2.5, 97.5])
    assert paired_bootstrap(a, b, n_boot=8000, seed=2)["ci95"] == pytest.approx(list(naive), abs=0.008)


def test_wilson_interval_contains_p_at_the_extremes():
    from sm70.eval.stats import wilson_interval

    for n in (1, 3, 12, 20, 263):
        lo, hi = wilson_interval(0, n)
        assert lo == 0.0 and hi > 0
        lo, hi = wilson_interval(n, n)
        assert hi == 1.0 and lo < 1
