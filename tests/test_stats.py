"""Seed statistics against independent computations: scipy's own Welch test, Monte-Carlo
coverage, hand-worked cases and rank correlations computed from explicit ranks."""
import math

import numpy as np
import pytest
from scipy import stats as sps

from fosc_jax.reproduce import stats


def test_welch_interval_matches_scipys_welch_test():
    x = [66.04, 75.22, 70.1, 68.4, 72.9]
    y = [72.62, 71.42, 74.0, 73.1, 71.9]
    iv = stats.welch_difference(x, y)
    ref = sps.ttest_ind(x, y, equal_var=False).confidence_interval(0.95)
    assert iv.estimate == pytest.approx(np.mean(x) - np.mean(y))
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high), rel=1e-9)


def test_welch_interval_hand_worked_equal_variances():
    # x = (0, 2), y = (0, 2) + 10: means differ by -10, each variance 2, se = sqrt(2/2 + 2/2)
    # = sqrt(2), df = (1 + 1)^2 / (1 + 1) = 2, t_{0.975, 2} = 4.302652729...
    iv = stats.welch_difference([0.0, 2.0], [10.0, 12.0])
    half = 4.302652729749464 * math.sqrt(2.0)
    assert (iv.estimate, iv.low, iv.high) == pytest.approx((-10.0, -10 - half, -10 + half))


@pytest.mark.parametrize("interval, truth, sds", [
    (stats.sd_ratio, 2.0, (2.0, 1.0)),                   # sd(x) / sd(y) = 2
    (stats.welch_difference, 3.0, (1.0, 4.0)),           # mean(x) - mean(y) = 3, unequal sds
])
def test_interval_covers_the_truth_95_percent_of_the_time(interval, truth, sds):
    rng = np.random.default_rng(0)
    hits, trials = 0, 4000
    mean_x = 3.0 if interval is stats.welch_difference else 0.0
    for _ in range(trials):
        iv = interval(rng.normal(mean_x, sds[0], 5), rng.normal(0.0, sds[1], 5))
        hits += iv.low <= truth <= iv.high
    assert abs(hits / trials - 0.95) < 0.02


def test_verdicts_follow_the_interval():
    iv = lambda lo, hi: stats.Interval(0.5 * (lo + hi), lo, hi, 0.95, "t")  # noqa: E731
    kw = dict(null=0.0, above="higher", below="lower", n="5 + 5 seeds")
    assert stats.verdict(iv(0.1, 2.0), **kw) == "higher"
    assert stats.verdict(iv(-3.0, -0.2), **kw) == "lower"
    assert stats.verdict(iv(-1.0, 2.0), **kw) == "not resolved at 5 + 5 seeds"


def test_spearman_equals_pearson_of_the_ranks():
    x = [0.3, 0.1, 0.9, 0.5, 0.7, 0.2]
    y = [10.0, 30.0, 5.0, 20.0, 1.0, 25.0]
    rx, ry = np.argsort(np.argsort(x)), np.argsort(np.argsort(y))
    n = len(x)
    rho = 1 - 6 * np.sum((rx - ry) ** 2) / (n * (n * n - 1))   # no ties
    res = stats.spearman(x, y)
    assert (res.rho, res.n) == (pytest.approx(rho), 6)
    assert 0 < res.p_value < 1


def test_binomial_se_and_mean_sd_by_hand():
    assert stats.binomial_se(0.5, 10_000) == pytest.approx(0.005)
    assert stats.mean_sd([1.0, 3.0]) == pytest.approx((2.0, math.sqrt(2.0)))
    with pytest.raises(ValueError):
        stats.welch_difference([1.0], [1.0, 2.0])
