"""Sanity checks that catch gradient masking (docs/method.md, Evaluation), as pure rules on a record.

Every rule reads an evaluation record (see :func:`fosc_jax.evaluation.evaluate_classifier`)
and returns warnings; none raises. "Noise" is the binomial standard error of an accuracy
measured on n examples, with Laplace smoothing p = (k + 1) / (n + 2) so that 0% and 100% still
get a non-zero error. Two accuracies differ "beyond noise" when

    |a - b| > z * sqrt(p_a (1 - p_a) / n_a + p_b (1 - p_b) / n_b)        (z = 3 by default)

This treats the two measurements as independent. They are computed on the same examples
(positively correlated), so the true standard error of the difference is smaller and the rule
errs towards silence: a warning means a real effect, not a 1-in-20 fluke.

Rules:
  large_eps     PGD-10 at eps >= 0.5 must not beat the largest class share. At eps = 0.5 every
                image in [0, 1] can be moved to the constant 0.5 image, so the trivial attack
                "show everyone the gray image" already scores at most that share; an attack
                that does worse has failed for sure (no tolerance needed: both numbers are
                exact on the same sample). Below eps = 0.5 the same threshold is a heuristic.
  eps_monotone  PGD-10 accuracy must not rise with eps (sweep + evaluation eps + large eps)
                beyond noise.
  more_steps    PGD-20 must not beat PGD-10 beyond noise.
  restart       A second random restart of PGD-10: its accuracy must agree with the first
                within noise, and the per-example worst case of the two must not fall below
                the first by more than z * SE(first) + ``restart_margin`` (1 point). The
                margin allows the usual small gain from restarts on robust models (Madry et
                al. report a few points over 50 restarts); far larger gains mean the start
                point, not the gradient, decides the outcome.
  black_box     Black-box accuracy must not fall below white-box accuracy beyond noise, per
                attack.
  fgsm_vs_pgd   FGSM must not beat PGD-10 / PGD-20 (i.e. score lower accuracy) beyond noise.
  square        Square (gradient-free) must not find what the gradient attacks missed. In the
                AutoAttack cascade Square runs last, on the points APGD-CE, APGD-T and FAB-T
                left robust: the robust accuracy it removes must stay within z * SE + 0.2
                points (AutoAttack's own 0.2-point alarm, plus noise). Run alone, its accuracy
                must not fall below the strongest gradient attack's beyond noise.
  convergence   A gradient attack's robust points whose final box-aware FOSC exceeds tau
                (``evaluation.convergence``) ended where a first-order step still raised the
                attack's loss. When they make up more than ``UNCONVERGED_MARGIN`` (1 point)
                of the accuracy, the number may be too high: a stronger attack may break them.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

DEFAULT_Z = 3.0
DEFAULT_RESTART_MARGIN = 0.01
LARGE_EPS = 0.5
SQUARE_MARGIN = 0.002
UNCONVERGED_MARGIN = 0.01
GRADIENT_ATTACKS = ("fgsm", "pgd10", "pgd20", "cw", "apgd-ce", "apgd-dlr", "apgd-t", "fab-t")


def smoothed_se(correct: int, n: int) -> float:
    """Binomial standard error of an accuracy with Laplace smoothing (never zero)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    p = (correct + 1.0) / (n + 2.0)
    return math.sqrt(p * (1.0 - p) / n)


def noise_tolerance(a: Mapping, b: Mapping, z: float = DEFAULT_Z) -> float:
    """z * the standard error of a - b for two {"correct", "n"} entries (independent)."""
    return z * math.sqrt(smoothed_se(a["correct"], a["n"]) ** 2
                         + smoothed_se(b["correct"], b["n"]) ** 2)


def below_beyond_noise(low: Mapping, high: Mapping, z: float = DEFAULT_Z) -> bool:
    """Whether ``low``'s accuracy is below ``high``'s by more than sampling noise: the
    shape of every "a weaker attack must not beat a stronger one" rule."""
    return high["accuracy"] - low["accuracy"] > noise_tolerance(low, high, z)


def _warn(check: str, message: str, **details) -> dict:
    return dict(check=check, message=message, **details)


def _pct(a: float) -> str:
    return f"{100.0 * a:.2f}%"


def check_large_eps(record: Mapping, z: float = DEFAULT_Z) -> list[dict]:
    """PGD at a large eps must do at least as well as the constant-gray-image attack."""
    entry = record.get("large_eps")
    if not entry:
        return []
    bound = record["class_share"]
    if entry["accuracy"] > bound:
        kind = "provably" if entry["eps"] >= LARGE_EPS else "probably"
        return [_warn("large_eps",
                      f"PGD-10 at eps={entry['eps']:.3g} leaves {_pct(entry['accuracy'])} "
                      f"accuracy, above the largest class share {_pct(bound)} that a constant "
                      f"image would give: the attack is {kind} failing (gradient masking?).",
                      accuracy=entry["accuracy"], bound=bound)]
    return []


def check_eps_monotone(record: Mapping, z: float = DEFAULT_Z) -> list[dict]:
    """PGD-10 accuracy must not rise with eps beyond noise."""
    points = list(record.get("eps_sweep") or [])
    if "pgd10" in record.get("white_box", {}):
        points.append(dict(eps=record["eps"], **record["white_box"]["pgd10"]))
    if record.get("large_eps"):
        points.append(record["large_eps"])
    points = sorted(points, key=lambda p: p["eps"])
    out = []
    for lo, hi in zip(points, points[1:]):
        if hi["eps"] > lo["eps"] and hi["accuracy"] - lo["accuracy"] > noise_tolerance(lo, hi, z):
            out.append(_warn("eps_monotone",
                             f"PGD-10 accuracy rises from {_pct(lo['accuracy'])} at eps="
                             f"{lo['eps']:.4g} to {_pct(hi['accuracy'])} at eps={hi['eps']:.4g}.",
                             eps=(lo["eps"], hi["eps"])))
    return out


def check_more_steps(record: Mapping, z: float = DEFAULT_Z) -> list[dict]:
    """PGD-20 must not be weaker than PGD-10 beyond noise."""
    wb = record.get("white_box", {})
    if "pgd10" in wb and "pgd20" in wb:
        a, b = wb["pgd10"], wb["pgd20"]
        if below_beyond_noise(a, b, z):
            return [_warn("more_steps",
                          f"PGD-20 accuracy {_pct(b['accuracy'])} is above PGD-10 "
                          f"{_pct(a['accuracy'])} by more than noise: more steps should never "
                          f"help the defense.")]
    return []


def check_restart(record: Mapping, z: float = DEFAULT_Z,
                  margin: float = DEFAULT_RESTART_MARGIN) -> list[dict]:
    """A second random start must agree with the first; their worst case must stay close."""
    r = record.get("restart")
    if not r:
        return []
    first, second, worst = r["first"], r["second"], r["worst"]
    out = []
    if abs(first["accuracy"] - second["accuracy"]) > noise_tolerance(first, second, z):
        out.append(_warn("restart",
                         f"two random starts of PGD-10 give {_pct(first['accuracy'])} and "
                         f"{_pct(second['accuracy'])}: the outcome depends on the start point."))
    drop = first["accuracy"] - worst["accuracy"]
    if drop > z * smoothed_se(first["correct"], first["n"]) + margin:
        out.append(_warn("restart",
                         f"per-example worst case over 2 random starts of PGD-10 is "
                         f"{_pct(worst['accuracy'])}, {_pct(drop)} below one start "
                         f"({_pct(first['accuracy'])}): the single-start number overstates "
                         f"robustness.", drop=drop))
    return out


def check_black_box(record: Mapping, z: float = DEFAULT_Z) -> list[dict]:
    """Transfer attacks must not beat white-box attacks beyond noise."""
    bb = (record.get("black_box") or {}).get("attacks", {})
    wb = record.get("white_box", {})
    out = []
    for name, b in bb.items():
        if name in wb and below_beyond_noise(b, wb[name], z):
            label = record.get("attacks", {}).get(name, {}).get("label", name)
            out.append(_warn("black_box",
                             f"black-box {label} accuracy {_pct(b['accuracy'])} is below "
                             f"white-box {_pct(wb[name]['accuracy'])}: the white-box gradients "
                             f"are uninformative (gradient masking?).", attack=name))
    return out


def check_fgsm_vs_pgd(record: Mapping, z: float = DEFAULT_Z) -> list[dict]:
    """FGSM (one step) must not be stronger than PGD beyond noise."""
    wb = record.get("white_box", {})
    out = []
    if "fgsm" in wb:
        f = wb["fgsm"]
        for name in ("pgd10", "pgd20"):
            if name not in wb:
                continue
            if below_beyond_noise(f, wb[name], z):
                out.append(_warn("fgsm_vs_pgd",
                                 f"FGSM accuracy {_pct(f['accuracy'])} is below PGD-{name[3:]} "
                                 f"{_pct(wb[name]['accuracy'])}: PGD is not maximising the loss.",
                                 attack=name))
    return out


def check_square(record: Mapping, z: float = DEFAULT_Z) -> list[dict]:
    """Square finding points the gradient attacks missed flags gradient masking."""
    out = []
    cascade = (record.get("autoattack") or {}).get("cascade") or []
    if len(cascade) > 1 and cascade[-1]["attack"] == "square":
        before, after = cascade[-2]["robust"], cascade[-1]["robust"]
        drop = before["accuracy"] - after["accuracy"]
        if drop > z * smoothed_se(before["correct"], before["n"]) + SQUARE_MARGIN:
            out.append(_warn("square",
                             f"Square (gradient-free) lowers AutoAttack's robust accuracy from "
                             f"{_pct(before['accuracy'])} to {_pct(after['accuracy'])} on points "
                             f"every gradient attack missed: gradient masking?", drop=drop))
    wb = record.get("white_box", {})
    grads = [(name, wb[name]) for name in GRADIENT_ATTACKS if name in wb]
    if "square" in wb and grads:
        name, best = min(grads, key=lambda item: item[1]["accuracy"])
        sq = wb["square"]
        if below_beyond_noise(sq, best, z):
            label = record.get("attacks", {}).get(name, {}).get("label", name)
            out.append(_warn("square",
                             f"Square (gradient-free) accuracy {_pct(sq['accuracy'])} is below "
                             f"the strongest gradient attack ({label}, "
                             f"{_pct(best['accuracy'])}): gradient masking?", attack=name))
    return out


def check_convergence(record: Mapping, z: float = DEFAULT_Z) -> list[dict]:
    """Robust points a gradient attack left unconverged (FOSC > tau) must stay under 1 point."""
    out = []
    for name, entry in (record.get("convergence") or {}).items():
        share = entry.get("unconverged_points")
        if share is None or share <= UNCONVERGED_MARGIN:
            continue
        label = record.get("attacks", {}).get(name, {}).get("label", name)
        frac = entry["unconverged"]["accuracy"]
        out.append(_warn("convergence",
                         f"{_pct(frac)} of the points robust to {label} end unconverged "
                         f"(final FOSC > {entry['tau']:g}), {_pct(share)} of the accuracy: "
                         f"the number may be too high (try a stronger attack, e.g. AutoAttack).",
                         attack=name, share=share))
    return out


CHECKS = {
    "large_eps": check_large_eps,
    "eps_monotone": check_eps_monotone,
    "more_steps": check_more_steps,
    "restart": check_restart,
    "black_box": check_black_box,
    "fgsm_vs_pgd": check_fgsm_vs_pgd,
    "square": check_square,
    "convergence": check_convergence,
}


def run_checks(record: Mapping, z: float = DEFAULT_Z,
               restart_margin: Optional[float] = None) -> list[dict]:
    """All rules on one record; a list of {"check", "message", ...} warnings."""
    if not z > 0:
        raise ValueError(f"z must be > 0, got {z}.")
    out: list[dict] = []
    for name, rule in CHECKS.items():
        if name == "restart" and restart_margin is not None:
            out += rule(record, z, restart_margin)
        else:
            out += rule(record, z)
    return out


__all__ = ["DEFAULT_Z", "DEFAULT_RESTART_MARGIN", "LARGE_EPS", "smoothed_se",
           "noise_tolerance", "below_beyond_noise", "check_large_eps", "check_eps_monotone", "check_more_steps",
           "check_restart", "check_black_box", "check_fgsm_vs_pgd", "check_square",
           "check_convergence", "SQUARE_MARGIN", "UNCONVERGED_MARGIN", "GRADIENT_ATTACKS",
           "CHECKS", "run_checks"]
