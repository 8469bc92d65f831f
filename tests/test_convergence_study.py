"""The separation measurement's statistics: ROC AUC against brute-force pair counting and
scipy's Mann-Whitney U, the bootstrap interval, tau, and the summary files (no model run)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from scipy.stats import mannwhitneyu

from fosc_jax.evaluation import convergence_study as cs


def _pairs_auc(scores, labels):
    pos, neg = scores[labels], scores[~labels]
    wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(4))
def test_roc_auc_matches_pair_counting_and_mann_whitney(seed):
    rng = np.random.default_rng(seed)
    n = 60
    labels = rng.random(n) < 0.3
    scores = np.round(rng.normal(labels * 0.8, 1.0), 1)  # ties on purpose
    auc = cs.roc_auc(scores, labels)
    assert auc == pytest.approx(_pairs_auc(scores, labels), abs=1e-12)
    u = mannwhitneyu(scores[labels], scores[~labels], alternative="two-sided").statistic
    assert auc == pytest.approx(u / (labels.sum() * (~labels).sum()), abs=1e-12)


def test_roc_auc_edge_cases():
    assert cs.roc_auc([1, 2, 3], [False, True, True]) == 1.0
    assert cs.roc_auc([3, 2, 1], [False, True, True]) == 0.0
    assert cs.roc_auc([1, 1, 1], [False, True, True]) == 0.5
    assert cs.roc_auc([1, 2], [False, False]) is None
    assert cs.bootstrap_auc([1, 2], [True, True]) is None


def test_bootstrap_interval_is_seeded_and_covers():
    rng = np.random.default_rng(0)
    labels = rng.random(200) < 0.25
    scores = rng.normal(labels * 1.0, 1.0)
    lo, hi = cs.bootstrap_auc(scores, labels, 500, seed=3)
    assert (lo, hi) == cs.bootstrap_auc(scores, labels, 500, seed=3)
    assert lo < cs.roc_auc(scores, labels) < hi and hi - lo < 0.3
    # coverage of the true AUC (Phi(1 / sqrt 2) = 0.760 for unit-variance normals 1 apart)
    hits = 0
    for s in range(40):
        r = np.random.default_rng(100 + s)
        lab = r.random(200) < 0.25
        sc = r.normal(lab * 1.0, 1.0)
        lo, hi = cs.bootstrap_auc(sc, lab, 300, seed=s)
        hits += lo <= 0.7602 <= hi
    assert hits >= 33  # 95% nominal; 33 of 40 is far in the lower tail if it held


def _fake_result(name, seed):
    rng = np.random.default_rng(seed)
    n = 80
    clean = rng.random(n) < 0.95
    robust = clean & (rng.random(n) < 0.7)
    over = robust & (rng.random(n) < 0.2)
    fosc_box = np.where(over, rng.uniform(0.02, 0.2, n), rng.uniform(0.0, 0.05, n))
    pe = dict(index=np.arange(n), clean=clean, pgd20_robust=robust, overestimated=over,
              fosc_box=fosc_box, fosc=fosc_box + 0.01, loss=rng.random(n),
              neg_margin=-rng.random(n))
    return dict(model=name, eps=0.3, n=n, budget="standard", seconds=dict(pgd20=1, autoattack=2),
                per_example={k: np.asarray(v).tolist() for k, v in pe.items()})


def test_tau_summary_and_files(tmp_path):
    results = [_fake_result("a", 0), _fake_result("b", 1)]
    both = [np.asarray(r["per_example"]["fosc_box"])[
        np.asarray(r["per_example"]["pgd20_robust"]) & ~np.asarray(
            r["per_example"]["overestimated"])] for r in results]
    tau = cs.choose_tau(results)
    assert tau == pytest.approx(np.mean([np.quantile(b, 0.9) for b in both]))  # 2 models
    summary = cs.summarise(results, num_resamples=200)
    from fosc_jax.evaluation.convergence import TAU_CE
    assert summary["tau"] == TAU_CE and summary["rule_tau"] == tau   # flags at evaluate's tau
    summary = cs.summarise(results, num_resamples=200, tau=tau)
    m = summary["models"][0]
    pe = {k: np.asarray(v) for k, v in results[0]["per_example"].items()}
    flagged = pe["pgd20_robust"] & (pe["fosc_box"] > tau)
    assert m["flagged"] == flagged.sum()
    assert m["recall_at_tau"] == pytest.approx((flagged & pe["overestimated"]).sum()
                                               / pe["overestimated"].sum())
    assert m["separation"]["fosc_box"]["auc"] > 0.8  # separable by construction
    assert set(m["separation"]) == set(cs.SCORES) | {"fosc_box_minus_loss",
                                                     "fosc_box_minus_neg_margin"}
    md = cs.markdown(summary)
    assert md.count("\n| a |") + md.count("\n| b |") == 2
    cs.histogram(results, str(tmp_path / "h.png"), tau)
    assert os.path.getsize(tmp_path / "h.png") > 1000
    json.dumps(summary)  # JSON-friendly


def test_auc_difference_is_paired():
    rng = np.random.default_rng(5)
    labels = rng.random(120) < 0.3
    a = rng.normal(labels * 1.5, 1.0)
    b = a + rng.normal(0, 0.3, 120)  # nearly the same ranking: a tight paired interval
    d = cs.bootstrap_auc_difference(a, b, labels, 500, seed=1)
    assert d["diff"] == pytest.approx(_pairs_auc(a, labels) - _pairs_auc(b, labels))
    assert d["low"] <= d["diff"] <= d["high"]
    lo_a, hi_a = cs.bootstrap_auc(a, labels, 500, seed=1)
    assert d["high"] - d["low"] < (hi_a - lo_a)  # pairing cancels the shared noise
    assert cs.bootstrap_auc_difference(a, b, np.zeros(120, bool)) is None


def test_overview_counts_models_from_the_table_and_histogram_wraps(tmp_path):
    """The sentence under the table counts by hand-made rows; many models make a grid."""
    def row(d_loss, lo_loss, hi_loss, d_margin, lo_m, hi_m, q90):
        sep = dict(fosc_box_minus_loss=dict(diff=d_loss, low=lo_loss, high=hi_loss),
                   fosc_box_minus_neg_margin=dict(diff=d_margin, low=lo_m, high=hi_m))
        return dict(separation=sep, robust_q90=q90)
    summary = dict(tau_quantile=0.9, models=[row(-0.1, -0.2, -0.01, -0.05, -0.1, 0.01, 0.2),
                                             row(0.02, -0.03, 0.06, 0.03, 0.01, 0.05, 0.9),
                                             row(-0.01, -0.06, 0.04, -0.2, -0.3, -0.1, 0.03)])
    assert cs.overview(summary) == (
        "FOSC_box's AUC is below the loss on 2 of 3 models (interval below 0 on 1, above 0 on "
        "0); below the margin on 2 of 3 models (interval below 0 on 1, above 0 on 1). The 0.9 "
        "quantile of FOSC_box over each model's points robust to both ranges from 0.03 to 0.9.")
    results = [_fake_result(f"m{i}", i) for i in range(6)]
    assert cs.robust_quantile(results[0]) == pytest.approx(np.quantile(
        np.asarray(results[0]["per_example"]["fosc_box"])[
            np.asarray(results[0]["per_example"]["pgd20_robust"])
            & ~np.asarray(results[0]["per_example"]["overestimated"])], 0.9))
    cs.histogram(results, str(tmp_path / "h.png"), 0.1)
    from PIL import Image
    width, height = Image.open(tmp_path / "h.png").size
    assert width < 4 * height            # 4 columns x 2 rows (one row of 6 would be ~8x)


@pytest.mark.parametrize("argv, flag", [
    (["--models", "MISSING"], "--models"),
    (["--data", "/no/such/folder"], "--data"),
    (["--num-examples", "0"], "--num-examples"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--eps", "3"], "--eps"),
])
def test_cli_refuses_bad_flags_in_one_line_before_any_work(argv, flag, tmp_path, capsys):
    model = tmp_path / "model"
    model.mkdir()
    args = {"--models": str(model), "--data": "bundled", "--out": str(tmp_path / "out")}
    for k, v in zip(argv[::2], argv[1::2]):
        args[k] = str(tmp_path / v) if v == "MISSING" else v
    with pytest.raises(SystemExit) as exit_:
        cs.main([x for kv in args.items() for x in kv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag}:") and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
