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
    return list(seed_items(runs, records, defense, key).values())


def seed_items(runs: Sequence[Run], records: Mapping[str, Mapping], defense: str,
               key: str) -> dict[str, float]:
    """Run name -> the metric, over the seeds of ``defense`` that have a record."""
    items = {}
    for run in runs:
        if run.defense == defense and run.role == "defense" and run.study == "table":
            rec = records.get(run.name)
            v = None if rec is None else metric(rec, key)
            if v is not None:
                items[run.name] = v
    return items


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Dynamic against Standard on one metric."""
    label: str
    standard: list
    dynamic: list
    difference: Optional[stats.Interval]     # Dynamic - Standard, points
    spread: Optional[stats.Interval]         # sd(Dynamic) / sd(Standard)
    names: tuple = ((), ())                  # run names of ``standard`` and ``dynamic``

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


    def without(self, name: str) -> "Comparison":
        """The same comparison with the seed run ``name`` left out."""
        keep = [[(n, v) for n, v in zip(ns, vs) if n != name]
                for ns, vs in zip(self.names, (self.standard, self.dynamic))]
        return _comparison(self.label, dict(keep[0]), dict(keep[1]))


def leave_one_out(c: Comparison) -> list[tuple[str, Comparison]]:
    """(left-out run, the comparison without it) for every seed of either defense."""
    return [(name, c.without(name)) for names in c.names for name in names]


def flipping(c: Comparison, verdict) -> list[tuple[str, Comparison]]:
    """The seeds whose removal changes ``verdict(c)`` (a Comparison method), with the
    comparison without each."""
    return [(n, o) for n, o in leave_one_out(c) if verdict(o) != verdict(c)]


def sensitivity_lines(comparisons: Sequence[Comparison]) -> list[str]:
    """For each resolved verdict: does it survive leaving out any one seed? (Five seeds give
    an interval that one unusual run can move; a verdict that rests on one run says so.)"""
    lines = []
    for c in comparisons:
        for what, verdict in (("difference", Comparison.verdict),
                              ("spread", Comparison.spread_verdict)):
            if getattr(c, what) is None or verdict(c).startswith("Not resolved"):
                continue
            flips = flipping(c, verdict)
            if not flips:
                lines.append(f"- {c.label}, {what}: \"{verdict(c)}\" holds with any one of the "
                             f"{len(c.standard) + len(c.dynamic)} seeds left out.")
                continue
            shown = "; ".join(f"without {n}: {_interval(getattr(o, what))}, "
                              f"{verdict(o)[0].lower()}{verdict(o)[1:]}" for n, o in flips)
            lines.append(f"- {c.label}, {what}: \"{verdict(c)}\" rests on single runs ({shown}).")
    if lines:
        lines = ["Leave one seed out (each resolved verdict recomputed without each seed in "
                 "turn):", ""] + lines
    return lines


def _interval(i: Optional[stats.Interval]) -> str:
    return "-" if i is None else f"{i.estimate:.2f} [{i.low:.2f}, {i.high:.2f}]"


def _comparison(label: str, s: Mapping[str, float], d: Mapping[str, float]) -> Comparison:
    diff = spread = None
    if len(s) >= 2 and len(d) >= 2:
        diff = stats.welch_difference(list(d.values()), list(s.values()))
        try:
            spread = stats.sd_ratio(list(d.values()), list(s.values()))
        except ValueError:
            spread = None
    return Comparison(label, list(s.values()), list(d.values()), diff, spread,
                      (tuple(s), tuple(d)))


def compare(runs: Sequence[Run], records: Mapping[str, Mapping],
            extra: Mapping[str, Mapping] = {}) -> list[Comparison]:
    """One Comparison per metric; ``extra`` holds AutoAttack records by run name."""
    out = []
    for key, label in METRICS:
        recs = extra if key == "autoattack" else records
        s = seed_items(runs, recs, "standard", key)
        d = seed_items(runs, recs, "dynamic", key)
        if s or d:
            out.append(_comparison(label, s, d))
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
    fragile = [n for n, _ in flipping(c, Comparison.spread_verdict)] if r is not None else []
    if fragile and not c.spread_verdict().startswith("Not resolved"):
        spread += f", but not without {' or '.join(fragile)} (leave-one-seed-out)"
    return (f"PGD-20, Dynamic - Standard over {c.n}: {d.estimate:+.2f} points, 95% CI "
            f"[{d.low:+.2f}, {d.high:+.2f}] ({d.method}): {c.verdict().lower()}{spread}.")
