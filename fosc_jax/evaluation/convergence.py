"""The convergence report of an evaluation: how far each gradient attack's final point is from
a first-order maximum of the attack's own loss (docs/method.md, Evaluation).

Per example, at the attack's final point x with clean input x0 and gradient g of the attack's
loss at x, the box-aware FOSC (:func:`fosc_jax.criterion.fosc_box`) is

    c_box(x) = max_{x' in B(x0, eps) and [0, 1]} <x' - x, g>,

0 when no feasible direction raises the loss to first order. The report summarises it over the
points that stay robust (correct clean and after the attack): its quantiles and the share above
the loss's threshold tau (``TAUS``). A robust point with c_box > tau is "unconverged": the
attack stopped where a first-order step still raised its loss, so the accuracy may be too high.
"""
from __future__ import annotations

from typing import Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from fosc_jax.criterion import fosc_box
from fosc_jax.losses import resolve_loss

# tau per attack loss, calibrated on PGD-20 at eps 0.3 on MNIST (docs/fosc_evaluation.md):
# the median over the four first measured models of the 90th percentile of c_box over the
# points robust to both PGD-20 and AutoAttack (0.233). Kept after the 11-model measurement,
# where that quantile splits into 0.22-0.26 (5 models) and 0.72-2.07 (6): there 0.23 still
# flags at least 7 overestimated points on every model (86% overall), the rule's 0.72 none
# on three. Losses on another scale (CW margin, DLR) have no tau: the quantiles only.
TAU_CE = 0.23
TAUS: dict[str, Optional[float]] = {"ce": TAU_CE, "cw": None, "dlr": None}
QUANTILES = (0.5, 0.9, 0.99)


def final_fosc_box(logits_fn, x: Array, x0: Array, y: Array, eps, loss="ce",
                   kappa: float = 50.0) -> Array:
    """Box-aware FOSC [B] of the attack loss ``loss`` at the final points ``x`` (traceable).

    The gradient of each example's loss comes from differentiating the sum of per-example
    losses, as in the attacks, so it is the gradient the attack's next step would use.
    """
    per_example_loss = resolve_loss(loss, kappa)
    g = jax.grad(lambda z: jnp.sum(per_example_loss(logits_fn(z), y)))(x)
    return fosc_box(g, x, x0, eps)


def convergence_entry(fosc: np.ndarray, robust: np.ndarray, tau: Optional[float],
                      loss: str) -> dict:
    """The report of one attack: c_box over its robust points.

    ``fosc`` [N] is each example's final c_box, ``robust`` [N] whether it is correct clean
    and after the attack. ``unconverged`` = {accuracy: share of robust points with c_box >
    tau, correct: their count, n: robust count} (the accuracy-entry shape the tables print),
    None without a tau; ``unconverged_points`` is their count over all N examples (the
    accuracy points that rest on unconverged examples).
    """
    fosc, robust = np.asarray(fosc, np.float64), np.asarray(robust, bool)
    if fosc.shape != robust.shape:
        raise ValueError(f"fosc {fosc.shape} and robust {robust.shape} must match.")
    values = fosc[robust]
    quantiles = ({f"q{int(round(100 * q))}": float(np.quantile(values, q)) for q in QUANTILES}
                 if values.size else {})
    entry = dict(loss=loss, criterion="fosc_box", tau=tau, n=int(fosc.size),
                 robust=int(values.size), quantiles=quantiles,
                 mean=float(values.mean()) if values.size else None,
                 unconverged=None, unconverged_points=None)
    if tau is not None and values.size:
        above = int(np.sum(values > tau))
        entry["unconverged"] = dict(accuracy=above / values.size, correct=above,
                                    n=int(values.size))
        entry["unconverged_points"] = above / fosc.size
    return entry


def convergence_report(per_attack: Mapping[str, tuple], clean_correct: np.ndarray,
                       taus: Mapping[str, Optional[float]] = TAUS) -> dict:
    """{attack name: :func:`convergence_entry`} from {name: (fosc_box [N], correct [N], loss)}.

    A point is robust when it is correct clean and after the attack.
    """
    clean_correct = np.asarray(clean_correct, bool)
    return {name: convergence_entry(fosc, clean_correct & np.asarray(correct, bool),
                                    taus.get(loss), loss)
            for name, (fosc, correct, loss) in per_attack.items()}


def convergence_columns(records: Sequence[Mapping], labels: Mapping[str, str]
                        ) -> list[tuple[str, str, tuple]]:
    """Table columns (header, csv name, path into the record): per attack, the share (%) of
    its robust points that end unconverged, for every attack some record reports it for."""
    cols = []
    for name, label in labels.items():
        if any(((r.get("convergence") or {}).get(name) or {}).get("unconverged")
               for r in records):
            cols.append((f"{label} unconv.", f"{name}_unconverged",
                         ("convergence", name, "unconverged")))
    return cols


def convergence_notes(row_labels: Sequence[str], records: Sequence[Mapping],
                      attack_labels: Mapping[str, str]) -> list[str]:
    """Markdown lines under the table: per run, each attack's c_box quantiles on robust points."""
    lines = []
    if convergence_columns(records, attack_labels):
        lines.append("- unconv. = share (%) of an attack's robust points whose final FOSC "
                     "(box-aware, of the attack's own loss) exceeds tau: there the attack had "
                     "not converged, so the accuracy may be too high.")
    for row, r in zip(row_labels, records):
        parts = []
        for name, e in (r.get("convergence") or {}).items():
            if not e.get("quantiles"):
                continue
            q = ", ".join(f"{k} {v:.3g}" for k, v in e["quantiles"].items())
            tail = (f", {100 * e['unconverged']['accuracy']:.1f}% > tau {e['tau']:g}"
                    if e.get("unconverged") else "")
            parts.append(f"{attack_labels.get(name, name)} {q}{tail}")
        if parts:
            lines.append(f"- {row} final FOSC (box-aware, own loss) of robust points: "
                         + "; ".join(parts))
    return lines


__all__ = ["TAU_CE", "TAUS", "QUANTILES", "final_fosc_box", "convergence_entry",
           "convergence_report", "convergence_columns", "convergence_notes"]
