"""The convergence report: final box-aware FOSC of the evaluation attacks, checked against numpy
(brute force over the corners of the feasible box in 4 dimensions); a cut-short attack is
flagged where the unstopped attack succeeds; the honesty rule and the table column.

The model is linear (logits = x W + b on 2x2 grey images, 3 classes), so the gradient of
each loss has a closed form that numpy computes independently of JAX.
"""
from __future__ import annotations

import dataclasses
import itertools

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
import pytest

from fosc_jax.classifier import Classifier
from fosc_jax.evaluation import honesty
from fosc_jax.evaluation.convergence import (TAU_CE, convergence_entry, convergence_report,
                                             final_fosc_box)
from fosc_jax.evaluation.suite import ATTACKS, Suite
from fosc_jax.evaluation.tables import csv_table, markdown_table

W = np.array([[4.0, -3.0, 1.0], [-2.0, 5.0, -4.0], [3.0, 2.0, -5.0], [-4.0, -1.0, 3.0]],
             np.float32)
B = np.array([0.1, -0.2, 0.05], np.float32)
EPS = 0.3


class Linear(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool = False):
        return nn.Dense(3)(x.reshape((x.shape[0], -1)))


def _classifier() -> Classifier:
    return Classifier(Linear(), {"params": {"Dense_0": {"kernel": jnp.asarray(W),
                                                        "bias": jnp.asarray(B)}}})


def _np_logits(x):
    return x.reshape(len(x), -1) @ W.astype(np.float64) + B


def _np_grad(x, y, loss):
    """Gradient of the per-example loss w.r.t. the flat input, by hand."""
    z = _np_logits(x)
    if loss == "ce":
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        return (p - np.eye(3)[y]) @ W.T
    other = np.where(np.eye(3)[y] > 0, -np.inf, z).argmax(1)  # CW: -relu(z_y - z_j + 50)
    active = z[np.arange(len(y)), y] - z[np.arange(len(y)), other] + 50.0 > 0
    return -(active[:, None] * (W.T[y] - W.T[other]))


def _brute_fosc_box(g, x, x0, eps):
    """max over the corners of [max(x0 - eps, 0), min(x0 + eps, 1)] of <x' - x, g>."""
    out = []
    for gi, xi, x0i in zip(g, x.reshape(len(x), -1), x0.reshape(len(x0), -1)):
        lo, hi = np.maximum(x0i - eps, 0.0), np.minimum(x0i + eps, 1.0)
        out.append(max(np.dot(np.where(c, hi, lo) - xi, gi)
                       for c in itertools.product([False, True], repeat=len(xi))))
    return np.array(out)


def _points(n=24, seed=0):
    rng = np.random.default_rng(seed)
    x0 = rng.choice([0.0, 0.1, 0.5, 0.9, 1.0], size=(n, 2, 2, 1)).astype(np.float32)
    x = np.clip(x0 + rng.uniform(-EPS, EPS, x0.shape), 0, 1).astype(np.float32)
    y = rng.integers(0, 3, n).astype(np.int32)
    return x0, x, y


@pytest.mark.parametrize("loss", ["ce", "cw"])
def test_final_fosc_box_matches_brute_force(loss):
    x0, x, y = _points()  # pixels at 0 and 1: the box binds
    clf = _classifier()
    got = np.asarray(final_fosc_box(clf.logits, jnp.asarray(x), jnp.asarray(x0),
                                    jnp.asarray(y), EPS, loss))
    want = _brute_fosc_box(_np_grad(x.astype(np.float64), y, loss), x, x0, EPS)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_suite_fgsm_fosc_box_matches_numpy():
    """Through the evaluation suite: FGSM's result, redone in numpy, and its FOSC there."""
    x0, _, y = _points(n=20, seed=1)
    suite = Suite(_classifier(), x0, y, batch_size=8, progress=False)
    out = suite.attack(ATTACKS["fgsm"], EPS)
    x0f = x0.astype(np.float64)
    x_adv = np.clip(x0f + EPS * np.sign(_np_grad(x0f, y, "ce")).reshape(x0.shape), 0, 1)
    want = _brute_fosc_box(_np_grad(x_adv, y, "ce"), x_adv, x0f, EPS)
    np.testing.assert_allclose(out["fosc_box"], want, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(out["correct"], _np_logits(x_adv).argmax(1) == y)
    margin = _np_logits(x_adv)[np.arange(len(y)), y] - np.where(
        np.eye(3)[y] > 0, -np.inf, _np_logits(x_adv)).max(1)
    np.testing.assert_allclose(out["margin"], margin, rtol=1e-4, atol=1e-4)


def _breakable_points():
    """Mid-grey points, correct clean; rows 0-5 breakable at eps 0.3, rows 6-7 far away."""
    x0 = np.full((8, 2, 2, 1), 0.5, np.float32)
    direction = (W[:, 0] - W[:, 1]).reshape(2, 2, 1)  # raises class 0 over class 1
    x0[:6] += 0.1 * np.sign(direction)  # margin 1.1; -4.3 at the worst corner
    y = np.zeros(8, np.int32)
    x0[6:] = np.where(direction > 0, 1.0, 0.0)[None]  # margin >= 2.9 in the whole ball
    return x0, y


def test_cut_short_attack_is_flagged_where_the_full_attack_succeeds():
    x0, y = _breakable_points()
    clf = _classifier()
    assert (_np_logits(x0.astype(np.float64)).argmax(1) == y).all()
    suite = Suite(clf, x0, y, batch_size=8, progress=False)
    short = dataclasses.replace(ATTACKS["pgd10"], name="short", num_steps=1,
                                step_fraction=0.02, random_start=False)
    cut = suite.attack(short, EPS)
    full = suite.attack(ATTACKS["pgd20"], EPS)
    assert cut["correct"][:6].all() and not full["correct"][:6].any()
    report = convergence_report({"short": (cut["fosc_box"], cut["correct"], "ce"),
                                 "pgd20": (full["fosc_box"], full["correct"], "ce")},
                                clean_correct=np.ones(8, bool))
    assert report["short"]["unconverged"]["correct"] >= 6  # every breakable point flagged
    assert report["short"]["unconverged_points"] >= 6 / 8
    assert full["correct"][6:].all()
    assert report["pgd20"]["robust"] == 2 and report["pgd20"]["unconverged"]["correct"] == 0
    record = dict(attacks={"short": {"label": "PGD-1 (short)"}}, convergence=report)
    warnings = honesty.check_convergence(record)
    assert [w["attack"] for w in warnings] == ["short"]
    assert "PGD-1 (short)" in warnings[0]["message"]


def test_convergence_entry_by_hand():
    fosc = np.array([0.0, 0.01, 0.5, 0.2, 0.9, 0.04])
    robust = np.array([True, True, True, True, False, True])
    e = convergence_entry(fosc, robust, tau=0.05, loss="ce")
    assert e["robust"] == 5 and e["n"] == 6
    assert e["unconverged"] == dict(accuracy=2 / 5, correct=2, n=5)
    assert e["unconverged_points"] == pytest.approx(2 / 6)
    assert e["quantiles"]["q50"] == pytest.approx(0.04)
    assert convergence_entry(fosc, robust, tau=None, loss="cw")["unconverged"] is None
    empty = convergence_entry(fosc, np.zeros(6, bool), tau=0.05, loss="ce")
    assert empty["quantiles"] == {} and empty["unconverged"] is None


def test_convergence_rule_margin_and_tables():
    def rec(share_points):
        k = int(round(share_points * 1000))
        conv = dict(pgd20=dict(loss="ce", criterion="fosc_box", tau=TAU_CE, n=1000,
                               robust=600, quantiles=dict(q50=0.01, q90=0.05, q99=0.2),
                               mean=0.02, unconverged=dict(accuracy=k / 600, correct=k, n=600),
                               unconverged_points=k / 1000))
        return dict(eps=0.3, clean=dict(accuracy=0.99, correct=990, n=1000),
                    white_box=dict(pgd20=dict(accuracy=0.6, correct=600, n=1000)),
                    attacks=dict(pgd20=dict(label="PGD-20")), convergence=conv,
                    honesty=dict(warnings=[]), defense="standard")
    assert honesty.check_convergence(rec(0.01)) == []  # exactly 1 point: not above
    warned = honesty.check_convergence(rec(0.02))
    assert len(warned) == 1 and "PGD-20" in warned[0]["message"]
    assert "convergence" in {w["check"] for w in honesty.run_checks(rec(0.02))}
    r = rec(0.02)
    md = markdown_table([r])
    assert "PGD-20 unconv." in md.splitlines()[0]
    assert "3.33" in md.splitlines()[2]  # 20 of 600 robust points
    assert "final FOSC (box-aware, own loss)" in md
    header, row = csv_table([r]).splitlines()[:2]
    assert "pgd20_unconverged" in header.split(",")
    assert float(row.split(",")[header.split(",").index("pgd20_unconverged")]) == \
        pytest.approx(100 * 20 / 600, abs=1e-3)


def test_apgd_ce_reports_fosc_at_its_best_iterate():
    """APGD-CE's report: the corner points stay robust and end converged (c_box ~ 0 at the
    maximising vertex); examples APGD did not attack get NaN."""
    from fosc_jax.autoattack.runner import run_autoattack
    x0, y = _breakable_points()
    suite = Suite(_classifier(), x0, y, batch_size=8, progress=False)
    clean = np.ones(8, bool)
    clean[0] = False  # pretend row 0 is misclassified: APGD skips it
    out = run_autoattack(suite, ["apgd-ce"], EPS, clean, "cpu")
    fosc, correct, loss = out["final_fosc"]["apgd-ce"]
    assert loss == "ce" and correct[6:].all() and not correct[:6].any()
    assert np.isnan(fosc[0]) and np.isfinite(fosc[1:]).all()
    assert (fosc[6:] < 1e-4).all()
    report = convergence_report({"apgd-ce": (fosc, correct, loss)}, clean)
    assert report["apgd-ce"]["robust"] == 2
    assert report["apgd-ce"]["unconverged"]["correct"] == 0


def test_apgd_best_iterate_and_its_fosc():
    """APGD's x_best: in the feasible set, a higher CE than the clean input, and its c_box
    matches numpy's brute force."""
    import jax
    from fosc_jax.autoattack.apgd import apgd
    x0, y = _breakable_points()
    x0, y = x0[6:], y[6:]  # robust: APGD runs all its steps
    clf = _classifier()
    res = apgd(clf.logits, jnp.asarray(x0), jnp.asarray(y), jax.random.key(0), eps=EPS,
               loss="ce", num_steps=20)
    xb = np.asarray(res.x_best, np.float64)
    assert np.asarray(res.robust).all()
    assert (xb >= np.maximum(x0 - EPS, 0) - 1e-6).all()
    assert (xb <= np.minimum(x0 + EPS, 1) + 1e-6).all()

    def ce(x):
        z = _np_logits(x)
        return np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]
    assert (ce(xb) > 10 * ce(x0.astype(np.float64))).all()  # ~0.06 against ~3e-4
    got = np.asarray(final_fosc_box(clf.logits, res.x_best, jnp.asarray(x0), jnp.asarray(y),
                                    EPS))
    want = _brute_fosc_box(_np_grad(xb, y, "ce"), xb, x0.astype(np.float64), EPS)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
