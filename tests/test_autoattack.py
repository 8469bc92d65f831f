"""Tests for fosc_jax.autoattack, each against an independent computation.

- DLR / targeted DLR: the paper's formulas evaluated row by row in numpy.
- APGD checkpoints: the paper's recursion p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06).
- FAB's box-constrained L-inf projection: scipy's linear-programming solver.
- All attacks on a linear model: its exact minimal adversarial distances (linear programs);
  no attack may fool a provably robust example, FAB-T must find the minimal distance.
- APGD-CE, APGD-T, FAB-T, Square on a small trained MLP: torchattacks' APGD, APGDT, FAB
  (multi-targeted) and Square on a PyTorch copy of the same network and images; accuracies
  must agree within binomial noise (skipped without torch / torchattacks).
- The Square honesty rule fires on a gradient-masked copy of the MLP and not on the MLP.
"""
from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fosc_jax.autoattack import (apgd, checkpoint_windows, dlr_loss, dlr_targeted_loss, fab_t,
                                 project_linf, square)
from fosc_jax.autoattack.runner import BUDGETS, run_component
from fosc_jax.autoattack.square import square_fraction
from fosc_jax.classifier import Classifier
from fosc_jax.evaluation import evaluate_classifier, honesty, markdown_table, read_results
from fosc_jax.evaluation.suite import Suite, data_placement
from fosc_jax.evaluation.tables import csv_table, write_results

sys.path.insert(0, os.path.dirname(__file__))
from test_evaluation import MLP, make_data, train_mlp  # noqa: E402

EPS = 0.08
CPU = BUDGETS["cpu"]


# ------------------------------------------------------------------ losses and schedules


def _dlr_numpy(z, y, t=None):
    out = []
    for row, yi, ti in zip(z, y, t if t is not None else [None] * len(y)):
        top = sorted(row.tolist(), reverse=True)
        if ti is None:
            other = max(v for j, v in enumerate(row) if j != yi)
            out.append(-(row[yi] - other) / (top[0] - top[2] + 1e-12))
        else:
            out.append(-(row[yi] - row[ti]) / (top[0] - 0.5 * (top[2] + top[3]) + 1e-12))
    return np.array(out)


def test_dlr_losses_match_the_formulas():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(64, 7)).astype(np.float32) * 3
    y = rng.integers(0, 7, 64).astype(np.int32)
    y[:32] = np.argmax(z[:32], axis=1)  # half the rows: the true class is the top logit
    t = (y + rng.integers(1, 7, 64)).astype(np.int32) % 7
    np.testing.assert_allclose(dlr_loss(jnp.asarray(z), jnp.asarray(y)), _dlr_numpy(z, y),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dlr_targeted_loss(jnp.asarray(z), jnp.asarray(y),
                                                 jnp.asarray(t)),
                               _dlr_numpy(z, y, t), rtol=1e-5, atol=1e-6)
    # DLR's point: invariant to shifting and scaling the logits
    np.testing.assert_allclose(dlr_loss(jnp.asarray(5 * z + 3), jnp.asarray(y)),
                               _dlr_numpy(z, y), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="at least 3 classes"):
        dlr_loss(jnp.zeros((2, 2)), jnp.zeros(2, jnp.int32))
    with pytest.raises(ValueError, match="at least 4 classes"):
        dlr_targeted_loss(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32), jnp.ones(2, jnp.int32))


@pytest.mark.parametrize("n", [100, 200])
def test_apgd_checkpoints_follow_the_paper(n):
    p = [0, 22, 41]  # in hundredths: p_0 = 0, p_1 = 0.22, then the paper's recursion
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 3, 6)
        if nxt > 100:
            break
        p.append(nxt)
    expected = [v * n // 100 for v in p[1:]]  # w_j = ceil(p_j N), exact in integers here
    assert list(np.flatnonzero(checkpoint_windows(n)) + 1) == expected


def test_square_schedule():
    # p_init halves after queries 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000
    got = [float(square_fraction(i, 5000, 0.8, False)) for i in (0, 10, 11, 50, 51, 4001, 8001)]
    np.testing.assert_allclose(got, [0.8, 0.8, 0.4, 0.4, 0.2, 0.8 / 128, 0.8 / 512])
    # rescaled to 1000 queries: query 100 plays the role of query 1000
    assert float(square_fraction(100, 1000, 0.8, True)) == pytest.approx(0.8 / 16)


# ------------------------------------------------------------------ FAB's projection


def test_project_linf_matches_linear_program():
    from scipy.optimize import linprog
    rng = np.random.default_rng(1)
    batch, dim = 24, 6
    t = rng.uniform(0, 1, (batch, dim))
    w = rng.normal(size=(batch, dim)) * (rng.uniform(size=(batch, dim)) > 0.2)
    b = (w * t).sum(1) + rng.normal(size=batch) * np.abs(w).sum(1) * 0.4  # some infeasible
    d = np.asarray(project_linf(jnp.asarray(t, jnp.float32), jnp.asarray(w, jnp.float32),
                                jnp.asarray(b, jnp.float32)), np.float64)
    n_feasible = 0
    for i in range(batch):
        # variables (d_1..d_D, lam): min lam, w.(t+d) = b, |d_j| <= lam, 0 <= t+d <= 1
        a_ub = np.block([[np.eye(dim), -np.ones((dim, 1))], [-np.eye(dim), -np.ones((dim, 1))]])
        res = linprog(np.r_[np.zeros(dim), 1.0], A_ub=a_ub, b_ub=np.zeros(2 * dim),
                      A_eq=np.r_[w[i], 0.0][None], b_eq=[b[i] - w[i] @ t[i]],
                      bounds=[(-t[i, j], 1 - t[i, j]) for j in range(dim)] + [(0, None)])
        assert np.all(t[i] + d[i] >= -1e-6) and np.all(t[i] + d[i] <= 1 + 1e-6)
        if res.status == 0:
            n_feasible += 1
            assert np.abs(d[i]).max() == pytest.approx(res.fun, rel=1e-4, abs=1e-5)
            assert w[i] @ (t[i] + d[i]) == pytest.approx(b[i], rel=1e-4, abs=1e-4)
        else:  # infeasible: the box corner closest to the hyperplane
            corner = np.where((w[i] @ t[i] > b[i]) == (w[i] > 0), 0.0, 1.0)
            corner = np.where(w[i] == 0, t[i], corner)
            np.testing.assert_allclose(t[i] + d[i], corner, atol=1e-6)
    assert 0 < n_feasible < batch


# ------------------------------------------------------------------ a linear model, exactly


def test_attacks_on_a_linear_model_against_exact_distances():
    from scipy.optimize import linprog
    rng = np.random.default_rng(2)
    batch, classes, shape = 48, 4, (4, 4, 1)
    dim = int(np.prod(shape))
    weights = rng.normal(size=(dim, classes)).astype(np.float32)
    bias = rng.normal(size=classes).astype(np.float32) * 0.1
    x = rng.uniform(0.2, 0.8, (batch,) + shape).astype(np.float32)
    y = np.argmax(x.reshape(batch, -1) @ weights + bias, axis=1).astype(np.int32)
    y[:4] = (y[:4] + 1) % classes  # a few clean-misclassified examples

    def logits_fn(z):
        return z.reshape(z.shape[0], -1) @ weights + bias

    # exact minimal L-inf distance to misclassification: one linear program per other class
    exact = np.full(batch, np.inf)
    flat = x.reshape(batch, -1).astype(np.float64)
    for i in range(4, batch):
        for c in range(classes):
            if c == y[i]:
                continue
            v = weights[:, c] - weights[:, y[i]]
            a_ub = np.block([[-v[None], np.zeros((1, 1))],
                             [np.eye(dim), -np.ones((dim, 1))],
                             [-np.eye(dim), -np.ones((dim, 1))]])
            b_ub = np.r_[v @ flat[i] + bias[c] - bias[y[i]], np.zeros(2 * dim)]
            res = linprog(np.r_[np.zeros(dim), 1.0], A_ub=a_ub, b_ub=b_ub,
                          bounds=[(-flat[i, j], 1 - flat[i, j]) for j in range(dim)] + [(0, None)])
            if res.status == 0:
                exact[i] = min(exact[i], res.fun)
    exact[:4] = 0.0  # misclassified already
    eps = float(np.median(exact[4:]))  # half the correct examples are provably robust

    @jax.jit
    def run(key):
        return (apgd(logits_fn, x, y, key, eps=eps, loss="ce", num_steps=50),
                fab_t(logits_fn, x, y, key, eps=eps, num_steps=50, num_targets=3),
                square(logits_fn, x, y, key, eps=eps, num_queries=300))

    results = run(jax.random.key(0))
    provably_robust = exact > eps * 1.001
    provably_fooled = exact < eps * 0.999
    for res in results:
        robust = np.asarray(res.robust)
        assert not robust[:4].any()  # clean-misclassified examples are never robust
        assert robust[provably_robust].all()  # no attack fools a provably robust example
        x_adv = np.asarray(res.x_adv)
        assert np.abs(x_adv - x).max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
        pred_ok = np.argmax(x_adv.reshape(batch, -1) @ weights + bias, axis=1) == y
        np.testing.assert_array_equal(pred_ok, robust)  # robust iff x_adv is classified right
    # FAB-T (all targets) finds every example that can be fooled; APGD-CE, which maximises
    # the cross-entropy rather than one margin, at least those clearly inside the ball
    assert not np.asarray(results[1].robust)[provably_fooled].any()
    assert not np.asarray(results[0].robust)[exact < 0.8 * eps].any()
    dist = np.asarray(results[1].distance)
    found = provably_fooled & np.isfinite(dist)
    assert np.array_equal(found[4:], provably_fooled[4:]) and np.isinf(dist[:4]).all()
    # FAB-T converges to the minimal distance (it can never beat the LP optimum)
    assert np.all(dist[found] >= exact[found] * (1 - 1e-4) - 1e-6)
    np.testing.assert_allclose(dist[found], exact[found], rtol=0.02)


def test_input_validation():
    f = lambda z: z.reshape(z.shape[0], -1)[:, :3]  # noqa: E731  3 classes
    x, y = jnp.zeros((2, 2, 2, 1)), jnp.zeros(2, jnp.int32)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="at least 4 classes"):
        apgd(f, x, y, key, eps=0.1, loss="dlr-targeted")
    with pytest.raises(ValueError, match="num_targets"):
        fab_t(f, x, y, key, eps=0.1, num_targets=3)
    with pytest.raises(ValueError, match="loss must be one of"):
        apgd(f, x, y, key, eps=0.1, loss="cw")
    with pytest.raises(ValueError, match="NHWC"):
        square(f, x.reshape(2, 4), y, key, eps=0.1)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        apgd(f, x, y, key, eps=-0.1)
    with pytest.raises(ValueError, match="budget must be one of"):
        evaluate_classifier(Classifier(MLP(), None), np.zeros((2, 8, 8, 1), np.uint8),
                            np.zeros(2, np.int32), eps=0.1, attacks=["autoattack"],
                            autoattack_budget="fast")


# ------------------------------------------------------------------ trained MLP


@pytest.fixture(scope="module")
def mlp():
    x_train, y_train = make_data(512, 0)
    x, y = make_data(256, 1)
    variables = train_mlp(0, x_train, y_train)
    suite = Suite(Classifier(MLP(), variables), x, y, batch_size=128, progress=False)
    clean = suite.predict() == y
    ours = {}
    for c in ("apgd-ce", "apgd-t", "fab-t", "square"):  # on clean-correct points, as the runner
        ours[c] = np.zeros(len(y), bool)
        ours[c][clean] = run_component(suite, c, EPS, np.flatnonzero(clean), CPU)
    return dict(variables=variables, x=x, y=y, ours=ours, clean=clean, suite=suite)


@pytest.mark.parametrize("component", ["apgd-ce", "square"])
def test_sharded_matches_single_device(mlp, component):
    assert mlp["suite"].placement.num_devices == 4  # tests/conftest.py: 4 CPU devices
    single = Suite(mlp["suite"].classifier, mlp["x"], mlp["y"], batch_size=128,
                   progress=False, placement=data_placement(1))
    got = run_component(single, component, EPS, np.flatnonzero(mlp["clean"]), CPU)
    np.testing.assert_array_equal(got, mlp["ours"][component][mlp["clean"]])


def _torch_copy(variables):
    import torch
    params = jax.tree.map(np.asarray, variables["params"])
    first = next(p for p in params.values() if p["kernel"].shape[0] == 64)
    last = next(p for p in params.values() if p["kernel"].shape[0] != 64)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, first["kernel"].shape[1]),
                              torch.nn.ReLU(), torch.nn.Linear(*last["kernel"].shape))
    with torch.no_grad():
        for layer, p in ((net[1], first), (net[3], last)):
            layer.weight.copy_(torch.tensor(p["kernel"].T))
            layer.bias.copy_(torch.tensor(p["bias"]))

    class NCHW(torch.nn.Module):  # torchattacks feeds NCHW; our model reads NHWC
        def forward(self, x):
            return net(x.permute(0, 2, 3, 1))
    return NCHW().eval()


def test_agrees_with_torchattacks(mlp):
    torch = pytest.importorskip("torch")
    torchattacks = pytest.importorskip("torchattacks")
    model = _torch_copy(mlp["variables"])
    x = torch.tensor(mlp["x"].astype(np.float32) / 255.0).permute(0, 3, 1, 2).contiguous()
    y = torch.tensor(mlp["y"]).long()
    ours_clean = np.argmax(np.asarray(MLP().apply(mlp["variables"], mlp["x"] / 255.0)), axis=1)
    with torch.no_grad():
        np.testing.assert_array_equal(model(x).argmax(1).numpy(), ours_clean)
    refs = {  # the CPU budget's settings (4 classes: 3 targets; Square 1,000 rescaled queries)
        "apgd-ce": torchattacks.APGD(model, eps=EPS, steps=100, n_restarts=1, loss="ce"),
        "apgd-t": torchattacks.APGDT(model, eps=EPS, steps=100, n_restarts=1, n_classes=4),
        "fab-t": torchattacks.FAB(model, eps=EPS, steps=100, n_restarts=1, n_classes=4,
                                  multi_targeted=True),
        "square": torchattacks.Square(model, eps=EPS, n_queries=1000, p_init=0.8,
                                      resc_schedule=True),
    }
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        theirs = {}
        for name, attack in refs.items():
            torch.manual_seed(0)
            adv = attack(x, y)
            assert (adv - x).abs().max() <= EPS + 1e-6
            with torch.no_grad():
                theirs[name] = (model(adv).argmax(1) == y).numpy()
    finally:
        torch.set_num_threads(threads)
    report = {}
    for name, ref in theirs.items():
        ours = mlp["ours"][name]
        a = dict(correct=int(ours.sum()), n=len(ours), accuracy=ours.mean())
        b = dict(correct=int(ref.sum()), n=len(ref), accuracy=ref.mean())
        report[name] = (a["accuracy"], b["accuracy"], np.mean(ours == ref))
        assert abs(a["accuracy"] - b["accuracy"]) <= honesty.noise_tolerance(a, b), report
        assert np.mean(ours == ref) >= 0.85, report  # and mostly on the same examples
    print("ours, torchattacks, per-example agreement:", report)
    # not vacuous: the gradient attacks leave an intermediate accuracy
    assert 0.2 < report["apgd-ce"][0] < 0.9 and 0.2 < report["apgd-t"][0] < 0.9


# ------------------------------------------------------------------ cascade and honesty


def test_cascade_is_the_worst_case_and_reported(mlp, tmp_path):
    rec = evaluate_classifier(Classifier(MLP(), mlp["variables"]), mlp["x"], mlp["y"],
                              eps=EPS, attacks=["autoattack"], batch_size=128,
                              autoattack_budget="cpu", progress=False, return_per_example=True,
                              honesty=False)  # PGD's checks are tested elsewhere
    ours, cascade = mlp["ours"], rec["autoattack"]["cascade"]
    assert [c["attack"] for c in cascade] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    # the cascade's first stage is APGD-CE alone (same programs, keys and batches)
    np.testing.assert_array_equal(rec["per_example"]["autoattack"] <= ours["apgd-ce"], True)
    assert cascade[0]["robust"]["correct"] == int(ours["apgd-ce"].sum())
    robust = [c["robust"]["correct"] for c in cascade]
    assert robust == sorted(robust, reverse=True)  # each stage only removes points
    assert rec["white_box"]["autoattack"]["correct"] == robust[-1]
    assert robust[-1] < robust[0]  # the later attacks add something here
    assert rec["autoattack"]["standard"] is False
    assert honesty.run_checks(rec) == []  # Square finds nothing the gradient attacks missed
    md = markdown_table([rec])
    assert "AutoAttack [cpu budget]" in md and "NOT the standard version" in md
    assert "autoattack_cpu" in csv_table([rec]).splitlines()[0]
    paths = write_results(tmp_path, [rec])
    back = read_results(paths["json"])[0]
    assert back["autoattack"]["cascade"][-1]["robust"] == cascade[-1]["robust"]


def test_square_flags_a_gradient_masked_model(mlp):
    masked = Classifier(MLP(quantise=True), mlp["variables"])  # zero input gradients
    rec = evaluate_classifier(masked, mlp["x"], mlp["y"], eps=EPS, attacks=["autoattack"],
                              batch_size=128, autoattack_budget="cpu", progress=False,
                              honesty=False)  # PGD's checks are tested elsewhere
    cascade = rec["autoattack"]["cascade"]
    assert cascade[2]["robust"]["accuracy"] > 0.9  # APGD and FAB are blind here
    assert cascade[3]["fooled"] > 0
    assert [w["check"] for w in honesty.run_checks(rec)] == ["square"]


def _entry(acc: float, n: int = 1000) -> dict:
    k = int(round(acc * n))
    return dict(accuracy=k / n, correct=k, n=n)


@pytest.mark.parametrize("before, after, alone, fires", [
    (0.50, 0.499, None, False),   # within noise and AutoAttack's 0.2 points
    (0.50, 0.40, None, True),     # Square removes 10 points the gradient attacks missed
    (None, None, 0.50, False),    # Square alone, as strong as PGD-10 (0.50)
    (None, None, 0.42, True),     # Square alone, well below PGD-10
])
def test_square_rule(before, after, alone, fires):
    rec = dict(white_box=dict(pgd10=_entry(0.50)), attacks={})
    if before is not None:
        rec["autoattack"] = dict(cascade=[dict(attack="fab-t", robust=_entry(before)),
                                          dict(attack="square", robust=_entry(after))])
    if alone is not None:
        rec["white_box"]["square"] = _entry(alone)
    assert bool(honesty.check_square(rec)) == fires


def test_cli_accepts_autoattack():
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import evaluate
    args = evaluate.build_parser().parse_args(
        ["--workdir", "a", "--attacks", "pgd10,AutoAttack,APGD-T,fab_t,square",
         "--autoattack-budget", "cpu"])
    assert args.attacks == ["pgd10", "autoattack", "apgd-t", "fab-t", "square"]
    assert args.autoattack_budget == "cpu"
    with pytest.raises(SystemExit):
        evaluate.build_parser().parse_args(["--workdir", "a", "--autoattack-budget", "fast"])
