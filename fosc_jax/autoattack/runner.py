"""AutoAttack through the evaluation suite: the standard cascade and each attack by name.

The standard version (Croce & Hein, ICML 2020; the reference code's ``version='standard'``
for L-inf) runs APGD-CE (100 steps, 1 restart), then APGD-T (9 target classes x 100 steps),
FAB-T (9 target classes x 100 steps) and Square (5,000 queries), each only on the points that
every earlier attack left robust; an example is robust iff it survives all four (the
per-example worst case). The CPU budget (fewer target classes, 1,000 Square queries) is NOT
the standard version and is labelled so wherever it is reported.

Each attack is one jitted program per (model, attack, settings), called on batches of the
suite's fixed batch size: the still-robust points are gathered on the host and padded to a
whole number of batches, so shrinking sets never trigger a recompile. Batches are sharded over
the suite's 'data' mesh like every other attack.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from fosc_jax.autoattack.apgd import apgd
from fosc_jax.autoattack.dlr import dlr_loss
from fosc_jax.autoattack.fab import fab_t
from fosc_jax.autoattack.names import (COMPONENTS, LABELS, NAMES, STANDARD_ORDER,  # noqa: F401
                                       canonical_name)
from fosc_jax.autoattack.square import square
from fosc_jax.classifier import Classifier
from fosc_jax.data.pipeline import unit_float
from fosc_jax.losses import cross_entropy

# the components whose final FOSC the convergence report gives: (loss name, loss function)
FOSC_LOSSES = {"apgd-ce": ("ce", cross_entropy), "apgd-dlr": ("dlr", dlr_loss)}


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much each attack may spend; only ``standard`` is AutoAttack as published."""
    name: str
    apgd_steps: int = 100
    apgd_restarts: int = 1
    num_targets: int = 9
    fab_steps: int = 100
    square_queries: int = 5000
    square_rescale: bool = False

    @property
    def standard(self) -> bool:
        return self == BUDGETS["standard"]

    def label(self, name: str = "autoattack") -> str:
        """Column label: the plain name for the standard version, else flagged."""
        return LABELS[name] if self.standard else f"{LABELS[name]} [{self.name} budget]"

    def description(self) -> str:
        if self.standard:
            return "standard version"
        return f"{self.name} budget, NOT the standard version"

    def settings(self, num_classes: int) -> dict:
        """The concrete settings (target classes capped at num_classes - 1)."""
        return dict(version=self.name, standard=self.standard, apgd_steps=self.apgd_steps,
                    apgd_restarts=self.apgd_restarts,
                    num_targets=min(self.num_targets, num_classes - 1), rho=0.75,
                    momentum=0.75, fab_steps=self.fab_steps, fab_alpha_max=0.1, fab_eta=1.05,
                    fab_beta=0.9, square_queries=self.square_queries, square_p_init=0.8,
                    square_rescale_schedule=self.square_rescale)


BUDGETS = {
    "standard": Budget("standard"),
    "cpu": Budget("cpu", num_targets=3, square_queries=1000, square_rescale=True),
}


def get_budget(name: str) -> Budget:
    if name not in BUDGETS:
        raise ValueError(f"autoattack budget must be one of {list(BUDGETS)}, got {name!r}.")
    return BUDGETS[name]


def _attack(component: str, budget: Budget, num_classes: int, logits_fn, x, y, key, eps):
    targets = min(budget.num_targets, num_classes - 1)
    if component in ("apgd-ce", "apgd-dlr"):
        return apgd(logits_fn, x, y, key, eps=eps, loss=component[5:],
                    num_steps=budget.apgd_steps, num_restarts=budget.apgd_restarts)
    if component == "apgd-t":
        return apgd(logits_fn, x, y, key, eps=eps, loss="dlr-targeted",
                    num_steps=budget.apgd_steps, num_restarts=budget.apgd_restarts,
                    num_targets=targets)
    if component == "fab-t":
        return fab_t(logits_fn, x, y, key, eps=eps, num_steps=budget.fab_steps,
                     num_targets=targets)
    if component == "square":
        return square(logits_fn, x, y, key, eps=eps, num_queries=budget.square_queries,
                      rescale_schedule=budget.square_rescale)
    raise ValueError(f"unknown AutoAttack component {component!r}; choose from {COMPONENTS}.")


@functools.partial(jax.jit, static_argnames=("model", "component", "budget", "num_classes"))
def _attack_batch(variables, x, y, key, eps, *, model, component, budget, num_classes):
    """One batch: the attack, then the model's prediction on its output (as the suite does)."""
    x = unit_float(x)
    clf = Classifier(model=model, variables=None)
    logits_fn = functools.partial(clf.apply, variables)
    res = _attack(component, budget, num_classes, logits_fn, x, y, key, eps)
    pred = jnp.argmax(logits_fn(res.x_adv), axis=-1).astype(jnp.int32)
    linf = jnp.max(jnp.abs(res.x_adv - x).reshape(x.shape[0], -1), axis=1)
    out = dict(pred=pred, linf=linf)
    if component in FOSC_LOSSES:  # the convergence report: FOSC of its own loss, at x_best
        from fosc_jax.evaluation.convergence import final_fosc_box
        out["fosc_box"] = final_fosc_box(logits_fn, res.x_best, x, y, eps,
                                         FOSC_LOSSES[component][1])
    return out


def _num_classes(suite) -> int:
    clf = suite.classifier
    shape = jax.ShapeDtypeStruct((1,) + suite.x.shape[1:], jnp.float32)
    return int(jax.eval_shape(clf.apply, clf.variables, shape).shape[-1])


def run_component(suite, component: str, eps: float, indices: np.ndarray, budget: Budget,
                  key_name: Optional[str] = None, desc: str = "", return_fosc: bool = False):
    """Correct-after-attack [len(indices)] of ``component`` on ``suite``'s examples ``indices``.

    With ``return_fosc`` (APGD-CE and APGD-DLR only): (correct, final box-aware FOSC of the
    attack's loss at each example's best iterate [len(indices)]).

    The indices are padded to whole batches of ``suite.batch_size`` with copies of the last
    one, which shares the last batch, so the padding never prolongs that batch's early exit.
    """
    from fosc_jax.evaluation.suite import attack_key, run_batched
    indices = np.asarray(indices, np.int64)
    n = len(indices)
    if n == 0:
        return (np.zeros(0, bool), np.zeros(0, np.float32)) if return_fosc else np.zeros(0, bool)
    size = suite.batch_size
    padded = np.concatenate([indices, np.repeat(indices[-1:], (-n) % size)])
    fn = functools.partial(_attack_batch, model=suite.classifier.model, component=component,
                           budget=budget, num_classes=_num_classes(suite))
    variables = suite._variables(suite.classifier)
    key = attack_key(suite.seed, key_name or f"autoattack/{component}")
    eps_arr = jnp.float32(eps)
    out = run_batched(lambda xb, yb, b: fn(variables, xb, yb, jax.random.fold_in(key, b),
                                           eps_arr),
                      suite.x[padded], suite.y[padded], batch_size=size,
                      placement=suite.placement, desc=desc, progress=suite.progress)
    if out["linf"][:n].max(initial=0.0) > eps * (1 + 1e-5) + 1e-6:
        raise RuntimeError(f"{component} left the eps-ball: max L-inf {out['linf'].max()}.")
    correct = out["pred"][:n] == suite.y[indices]
    return (correct, out["fosc_box"][:n]) if return_fosc else correct


def _final_fosc(suite, component, eps, idx, plan, desc) -> tuple[np.ndarray, np.ndarray]:
    """run_component on ``idx`` with the FOSC where the component has one: (correct [len(idx)],
    FOSC [N], NaN outside ``idx`` or without one)."""
    fosc = np.full(len(suite.y), np.nan, np.float32)
    if component not in FOSC_LOSSES:
        return run_component(suite, component, eps, idx, plan, desc=desc), fosc
    correct, fosc[idx] = run_component(suite, component, eps, idx, plan, desc=desc,
                                       return_fosc=True)
    return correct, fosc


def _entry(correct: np.ndarray) -> dict:
    k, n = int(np.sum(correct)), int(np.size(correct))
    return dict(accuracy=k / n, correct=k, n=n)


def _log(suite, message: str) -> None:
    if suite.progress:
        tqdm.write(message)


def run_autoattack(suite, names: Sequence[str], eps: float, clean_correct: np.ndarray,
                   budget: str = "standard") -> dict[str, Any]:
    """Run AutoAttack attacks on a :class:`~fosc_jax.evaluation.suite.Suite`.

    ``names``: canonical names from ``NAMES``; "autoattack" is the cascade, a component name
    runs that attack alone on every clean-correct point. Returns ``per_example`` (correct
    after each named attack, [N] bool), ``white_box`` ({name: accuracy entry}), ``attacks``
    (settings per name), ``seconds``, ``autoattack`` (the cascade's report, or None) and
    ``final_fosc`` ({"apgd-ce" / "apgd-dlr" run alone, "autoattack/apgd-ce" in the cascade:
    (final box-aware FOSC [N], correct after it [N], loss name)}, the convergence report's
    inputs).
    """
    plan = get_budget(budget)
    num_classes = _num_classes(suite)
    settings = plan.settings(num_classes)
    clean_correct = np.asarray(clean_correct, bool)
    n = len(clean_correct)
    out: dict[str, Any] = dict(per_example={}, white_box={}, attacks={}, seconds={},
                               autoattack=None, final_fosc={})
    tag = "" if plan.standard else f" [{plan.name} budget: NOT standard]"
    for name in names:
        if name not in NAMES:
            raise ValueError(f"unknown AutoAttack attack {name!r}; choose from {NAMES}.")
        start = time.perf_counter()
        if name == "autoattack":
            robust = clean_correct.copy()
            cascade = []
            for component in STANDARD_ORDER:
                t0 = time.perf_counter()
                idx = np.flatnonzero(robust)
                desc = f"AutoAttack{tag} {LABELS[component]} eps={eps:.4g} ({len(idx)} robust)"
                still, fosc = _final_fosc(suite, component, eps, idx, plan, desc)
                robust[idx[~still]] = False
                if component in FOSC_LOSSES:
                    out["final_fosc"][f"autoattack/{component}"] = (
                        fosc, robust.copy(), FOSC_LOSSES[component][0])
                cascade.append(dict(attack=component, label=LABELS[component],
                                    attacked=int(len(idx)), fooled=int(np.sum(~still)),
                                    robust=_entry(robust),
                                    seconds=time.perf_counter() - t0))
                _log(suite, f"AutoAttack{tag} after {LABELS[component]}: robust accuracy "
                            f"{100 * robust.mean():.2f}% ({robust.sum()}/{n}), "
                            f"{cascade[-1]['seconds']:.1f} s")
            out["autoattack"] = dict(version=plan.name, standard=plan.standard,
                                     description=plan.description(), label=plan.label(),
                                     settings=settings, cascade=cascade)
            correct = robust
        else:
            idx = np.flatnonzero(clean_correct)
            desc = f"{LABELS[name]}{tag} eps={eps:.4g}"
            correct = np.zeros(n, bool)
            correct[idx], fosc = _final_fosc(suite, name, eps, idx, plan, desc)
            if name in FOSC_LOSSES:
                out["final_fosc"][name] = (fosc, correct, FOSC_LOSSES[name][0])
            _log(suite, f"{plan.label(name)}: accuracy {100 * correct.mean():.2f}%")
        out["seconds"][name] = time.perf_counter() - start
        out["per_example"][name] = correct
        out["white_box"][name] = _entry(correct)
        out["attacks"][name] = dict(label=plan.label(name), **settings)
    return out


__all__ = ["COMPONENTS", "STANDARD_ORDER", "NAMES", "LABELS", "Budget", "BUDGETS",
           "get_budget", "canonical_name", "run_component", "run_autoattack"]
