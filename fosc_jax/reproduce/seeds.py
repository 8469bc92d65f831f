"""Dynamic against Standard over seeds: per-metric means, intervals and verdicts.

Every number of the comparison is a white-box accuracy (%) of one seed's final model; the
seeds of a defense are the table runs with ``role == "defense"`` (the surrogate, trained with
its own seed for the black-box attacks, is not one of Standard's seeds).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping, Optional, Sequence

from fosc_jax.reproduce import stats
from fosc_jax.reproduce.plan import Run

METRICS = (("clean", "clean"), ("fgsm", "FGSM"), ("pgd10", "PGD-10"), ("pgd20", "PGD-20"),
           ("cw", "CW-inf"), ("autoattack", "AutoAttack"))


def metric(record: Mapping, key: str) -> Optional[float]:
    """Accuracy (%) of one evaluation record for ``key`` (None when not run)."""
    entry = record["clean"] if key == "clean" else record["white_box"].get(key)
    return None if entry is None else 100.0 * entry["accuracy"]


def seed_values(runs: Sequence[Run], records: Mapping[str, Mapping], defense: str,
                key: str) -> list[float]:
    """The metric over the seeds of ``defense`` that have a record."""
    vals = []
    for run in runs:
        if run.defense == defense and run.role == "defense" and run.study == "table":
            rec = records.get(run.name)
            v = None if rec is None else metric(rec, key)
            if v is not None:
                vals.append(v)
    return vals


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Dynamic against Standard on one metric."""
    label: str
    standard: list
    dynamic: list
    difference: Optional[stats.Interval]     # Dynamic - Standard, points
    spread: Optional[stats.Interval]         # sd(Dynamic) / sd(Standard)

    @property
    def n(self) -> str:
        return f"{len(self.dynamic)} + {len(self.standard)} seeds"

    def verdict(self) -> str:
        if self.difference is None:
            return "not resolved: fewer than 2 seeds of each"
        v = stats.verdict(self.difference, null=0.0, above="Dynamic is higher",
                          below="Dynamic is lower", n=self.n)
        return v[0].upper() + v[1:]

    def spread_verdict(self) -> str:
        if self.spread is None:
            return "not resolved: fewer than 2 seeds of each, or no spread"
        v = stats.verdict(self.spread, null=1.0, above="Dynamic varies more across seeds",
                          below="Dynamic is more stable across seeds", n=self.n)
        return v[0].upper() + v[1:]


def compare(runs: Sequence[Run], records: Mapping[str, Mapping],
            extra: Mapping[str, Mapping] = {}) -> list[Comparison]:
    """One Comparison per metric; ``extra`` holds AutoAttack records by run name."""
    out = []
    for key, label in METRICS:
        recs = extra if key == "autoattack" else records
        s = seed_values(runs, recs, "standard", key)
        d = seed_values(runs, recs, "dynamic", key)
        if not s and not d:
            continue
        diff = spread = None
        if len(s) >= 2 and len(d) >= 2:
            diff = stats.welch_difference(d, s)
            try:
                spread = stats.sd_ratio(d, s)
            except ValueError:
                spread = None
        out.append(Comparison(label, s, d, diff, spread))
    return out


def _ms(values: Sequence[float]) -> str:
    if not values:
        return "-"
    m, sd = stats.mean_sd(values)
    return f"{m:.2f} ± {sd:.2f}" if len(values) > 1 else f"{m:.2f}"


def comparison_lines(comparisons: Sequence[Comparison]) -> list[str]:
    """The RESULTS.md tables: means and SDs, the difference and the spread, with verdicts."""
    lines = ["| metric | Standard, mean ± sd (n) | Dynamic, mean ± sd (n) | Dynamic - Standard "
             "[95% CI] | verdict |", "|---|---|---|---|---|"]
    for c in comparisons:
        d = c.difference
        ci = "-" if d is None else f"{d.estimate:+.2f} [{d.low:+.2f}, {d.high:+.2f}]"
        lines.append(f"| {c.label} | {_ms(c.standard)} ({len(c.standard)}) | {_ms(c.dynamic)} "
                     f"({len(c.dynamic)}) | {ci} | {c.verdict()} |")
    lines += ["", "| metric | sd(Dynamic) / sd(Standard) [95% CI] | verdict |", "|---|---|---|"]
    for c in comparisons:
        r = c.spread
        ci = "-" if r is None else f"{r.estimate:.2f} [{r.low:.2f}, {r.high:.2f}]"
        lines.append(f"| {c.label} | {ci} | {c.spread_verdict()} |")
    return lines


def summary_line(comparisons: Sequence[Comparison]) -> Optional[str]:
    """One sentence for the README: the PGD-20 verdict with its interval."""
    c = next((c for c in comparisons if c.label == "PGD-20"), None)
    if c is None or c.difference is None:
        return None
    d, r = c.difference, c.spread
    spread = ("" if r is None else f"; seed spread ratio sd(Dynamic)/sd(Standard) "
              f"{r.estimate:.2f} [{r.low:.2f}, {r.high:.2f}]: {c.spread_verdict().lower()}")
    return (f"PGD-20, Dynamic - Standard over {c.n}: {d.estimate:+.2f} points, 95% CI "
            f"[{d.low:+.2f}, {d.high:+.2f}] ({d.method}): {c.verdict().lower()}{spread}.")
