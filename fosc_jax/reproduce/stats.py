"""Statistics for claims over seeds and runs: intervals, verdicts, rank correlation.

Pure numpy/scipy functions on plain arrays. The reproduction compares two defenses over a
handful of seeds, so every comparison carries its interval and its verdict follows from the
interval alone:

- a difference of means: Welch's t interval (unequal variances, Welch-Satterthwaite degrees
  of freedom), which stays valid for n = 2..10 seeds when the seed-to-seed spread is roughly
  normal, where a bootstrap over 5 seeds has too few distinct resamples to be trusted;
- a ratio of standard deviations (is one defense more stable across seeds?): the F interval
  for the variance ratio, square-rooted;
- a binomial standard error for one accuracy on n test images;
- Spearman's rank correlation with its n and two-sided p-value, and its stratified form
  (ranks taken within groups, e.g. runs at two training scales) with a bootstrap that
  resamples within each group.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
from scipy import stats as sps


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on ``n`` independent test images."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    p = float(accuracy)
    return math.sqrt(p * (1.0 - p) / n)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1; nan for one value)."""
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else float("nan")


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided confidence interval."""
    estimate: float
    low: float
    high: float
    level: float
    method: str


def welch_difference(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> Interval:
    """mean(x) - mean(y) with Welch's t interval (needs two or more values in each)."""
    a, b = np.asarray(x, float), np.asarray(y, float)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"Welch's interval needs >= 2 values per group, got {a.size} and {b.size}.")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = float(a.mean() - b.mean())
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Interval(diff, diff, diff, level, "Welch t")
    df = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
    half = float(sps.t.ppf(0.5 + level / 2, df)) * se
    return Interval(diff, diff - half, diff + half, level, f"Welch t, df {df:.1f}")


def sd_ratio(x: Sequence[float], y: Sequence[float], level: float = 0.95) -> Interval:
    """sd(x) / sd(y) with the F interval of the variance ratio (normal seeds assumed)."""
    a, b = np.asarray(x, float), np.asarray(y, float)
    if a.size < 2 or b.size < 2:
        raise ValueError(f"an SD ratio needs >= 2 values per group, got {a.size} and {b.size}.")
    va, vb = a.var(ddof=1), b.var(ddof=1)
    if vb == 0.0:
        raise ValueError("the second group has zero spread; the ratio is undefined.")
    ratio = va / vb
    d1, d2 = a.size - 1, b.size - 1
    low = ratio / float(sps.f.ppf(0.5 + level / 2, d1, d2))
    high = ratio / float(sps.f.ppf(0.5 - level / 2, d1, d2))
    return Interval(math.sqrt(ratio), math.sqrt(low), math.sqrt(high), level, "F test")


def verdict(interval: Interval, *, null: float, above: str, below: str, n: str) -> str:
    """``above`` when the whole interval lies above ``null``, ``below`` when below, else
    "not resolved at ``n``" (e.g. n = "5 + 5 seeds")."""
    if interval.low > null:
        return above
    if interval.high < null:
        return below
    return f"not resolved at {n}"


@dataclasses.dataclass(frozen=True)
class RankCorrelation:
    rho: float
    p_value: float
    n: int


def spearman(x: Sequence[float], y: Sequence[float]) -> RankCorrelation:
    """Spearman's rho between paired values, its two-sided p-value and n."""
    a, b = np.asarray(x, float), np.asarray(y, float)
    if a.shape != b.shape or a.size < 3:
        raise ValueError(f"spearman needs >= 3 pairs of equal length, got {a.shape} and {b.shape}.")
    res = sps.spearmanr(a, b)
    return RankCorrelation(float(res.statistic), float(res.pvalue), int(a.size))


def within_group_ranks(values: Sequence[float], groups: Sequence) -> np.ndarray:
    """Each value's rank among the values of its own group, as a centred fraction:
    (rank - 0.5) / n_group - 0.5 in (-0.5, 0.5), ties averaged."""
    v, g = np.asarray(values, float), np.asarray(groups)
    if v.shape != g.shape:
        raise ValueError(f"values and groups differ in shape: {v.shape} and {g.shape}.")
    out = np.empty_like(v)
    for key in np.unique(g):
        m = g == key
        out[m] = (sps.rankdata(v[m]) - 0.5) / m.sum() - 0.5
    return out


def stratified_spearman(x: Sequence[float], y: Sequence[float], groups: Sequence) -> float:
    """Spearman's rho with ranks taken within each group: the Pearson correlation of
    :func:`within_group_ranks`. A run is compared only with runs of its own group, so a
    feature that merely tells the groups apart scores 0, not the groups' difference in ``y``.
    With one group it is Spearman's rho; NaN where x or y is constant within every group."""
    a, b = within_group_ranks(x, groups), within_group_ranks(y, groups)
    if not a.any() or not b.any():
        return float("nan")
    return float(np.sum(a * b) / math.sqrt(np.sum(a * a) * np.sum(b * b)))


def stratified_bootstrap(statistic, groups: Sequence, *, reps: int = 4000, seed: int = 0,
                         level: float = 0.95, what: str = "runs") -> Interval:
    """Percentile bootstrap of ``statistic(index_array)``, each resample drawn with
    replacement within every group (its size kept); resamples where the statistic is not
    finite are dropped and the count kept is named in the method."""
    g = np.asarray(groups)
    members = [np.flatnonzero(g == key) for key in np.unique(g)]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(reps):
        i = np.concatenate([m[rng.integers(0, len(m), len(m))] for m in members])
        value = statistic(i)
        if np.isfinite(value):
            draws.append(value)
    if not draws:
        raise ValueError("the statistic is undefined on every resample.")
    lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    strata = "" if len(members) == 1 else f" within {len(members)} groups"
    return Interval(float(statistic(np.arange(len(g)))), float(lo), float(hi), level,
                    f"percentile bootstrap over {what}{strata}, {len(draws)} resamples")


__all__ = ["binomial_se", "mean_sd", "Interval", "welch_difference", "sd_ratio", "verdict",
           "RankCorrelation", "spearman", "within_group_ranks", "stratified_spearman",
           "stratified_bootstrap"]
