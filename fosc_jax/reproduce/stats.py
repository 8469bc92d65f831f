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
- Spearman's rank correlation with its n and two-sided p-value.
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


__all__ = ["binomial_se", "mean_sd", "Interval", "welch_difference", "sd_ratio", "verdict",
           "RankCorrelation", "spearman"]
