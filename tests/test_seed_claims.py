"""The seed comparison and the FOSC-vs-loss claim on made-up records, checked against scipy's
Welch test and against data built to favour one feature."""
import numpy as np
import pytest
from scipy import stats as sps

from fosc_jax.reproduce import section3, seeds, stats
from fosc_jax.reproduce.plan import Run


def _record(clean, pgd20):
    entry = lambda a: dict(accuracy=a / 100, correct=int(a * 100), n=10_000)  # noqa: E731
    return dict(clean=entry(clean), white_box=dict(pgd20=entry(pgd20)))


def test_compare_uses_only_the_defense_seeds_and_matches_welch():
    std = [66.0, 75.2, 70.4, 69.9, 72.5]
    dyn = [72.6, 71.4, 73.0, 74.1, 72.2]
    runs, records = [], {}
    for i, (s, d) in enumerate(zip(std, dyn)):
        runs += [Run(f"standard_s{i}", "standard", i), Run(f"dynamic_s{i}", "dynamic", i)]
        records[f"standard_s{i}"], records[f"dynamic_s{i}"] = _record(97, s), _record(97, d)
    # Neither the surrogate nor a Section 3 run is a seed of Standard.
    runs += [Run("surrogate", "standard", 100, role="surrogate"),
             Run("s3_pgd", "standard", 0, study="section3")]
    records["surrogate"], records["s3_pgd"] = _record(97, 10.0), _record(97, 10.0)
    comps = {c.label: c for c in seeds.compare(runs, records)}
    c = comps["PGD-20"]
    assert sorted(c.standard) == sorted(std) and sorted(c.dynamic) == sorted(dyn)
    ref = sps.ttest_ind(dyn, std, equal_var=False).confidence_interval(0.95)
    assert np.allclose((c.difference.low, c.difference.high), (ref.low, ref.high))
    assert c.verdict() == ("Dynamic is higher" if ref.low > 0 else
                           "Not resolved at 5 + 5 seeds")
    # Same clean accuracy everywhere: zero spread, no verdict on stability.
    assert comps["clean"].spread is None
    assert "PGD-20, Dynamic - Standard over 5 + 5 seeds" in seeds.summary_line(list(comps.values()))


def test_rank_advantage_favours_the_feature_that_orders_robustness():
    rng = np.random.default_rng(0)
    robust = np.linspace(50, 90, 16)
    fosc = -robust + rng.normal(0, 2, 16)        # lower FOSC, more robust
    loss = rng.normal(0, 1, 16)                   # unrelated
    adv = section3.bootstrap_rank_advantage(fosc, loss, robust, reps=500)
    assert adv.low > 0
    back = section3.bootstrap_rank_advantage(loss, fosc, robust, reps=500)
    assert back.high < 0
    points = [section3.ClaimPoint(f"r{i}", "table", f, 0.0, l, y, 1000)
              for i, (f, l, y) in enumerate(zip(fosc, loss, robust))]
    rows, answer = section3.claim_rows(points)
    assert "yes: FOSC ranks the runs better." in answer
    assert "FOSC mean's is -1.00 [-1.00, " in answer       # ranks exactly reversed
    assert answer.endswith("]: the paper's direction.")
    assert rows[2].startswith("| FOSC mean | -1.00 [")      # ranks exactly reversed
    assert rows[3].startswith("| FOSC share <= 0.1 | undefined")


def test_stratified_spearman_is_spearman_within_one_group_and_ignores_group_offsets():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=12), rng.normal(size=12)
    x[3] = x[5]                                               # a tie
    assert stats.stratified_spearman(x, y, ["a"] * 12) == pytest.approx(
        sps.spearmanr(x, y).statistic)
    # Two groups: within each, x orders y exactly; between them the offsets are reversed
    # (group b has larger x and smaller y), which pooled ranks would count against x.
    xa, ya = np.arange(6.0), np.arange(6.0)
    x2, y2 = np.r_[xa, xa + 100], np.r_[ya + 100, ya]
    g = ["a"] * 6 + ["b"] * 6
    assert sps.spearmanr(x2, y2).statistic < 0
    assert stats.stratified_spearman(x2, y2, g) == pytest.approx(1.0)
    # Hand case: ranks within groups of 2 and 3 -> fractions -0.25, 0.25 and -1/3, 0, 1/3.
    fr = stats.within_group_ranks([5, 1, 7, 9, 8], ["p", "p", "q", "q", "q"])
    np.testing.assert_allclose(fr, [0.25, -0.25, -1 / 3, 1 / 3, 0.0])
    # A feature that only tells the groups apart carries no within-group information.
    assert np.isnan(stats.stratified_spearman([0] * 6 + [1] * 6, y2, g))


def test_stratified_bootstrap_keeps_each_groups_size_and_matches_a_plain_one_for_one_group():
    g = np.array(["a"] * 3 + ["b"] * 7)
    sizes = []
    stats.stratified_bootstrap(lambda i: sizes.append(np.bincount((g[i] == "b").astype(int),
                                                                  minlength=2).tolist()) or 0.0,
                               g, reps=50)
    assert all(s == [3, 7] for s in sizes[:-1])               # the last call: the estimate
    # One group: the same draws as resampling all indices with rng.integers(0, n, n).
    v = np.random.default_rng(2).normal(size=9)
    got = stats.stratified_bootstrap(lambda i: float(v[i].mean()), ["x"] * 9, reps=300, seed=5)
    rng = np.random.default_rng(5)
    means = [v[rng.integers(0, 9, 9)].mean() for _ in range(300)]
    assert (got.low, got.high) == pytest.approx(tuple(np.percentile(means, [2.5, 97.5])))
    assert got.estimate == pytest.approx(v.mean())


def test_claim_answer_ranks_within_studies_when_pooling_would_mislead():
    """Two studies at different scales: the loss level differs between them (and so does
    robustness), but within each study FOSC orders robustness and the loss does not. Pooled
    ranks credit the loss; the verdict, within studies, credits FOSC."""
    rng = np.random.default_rng(3)
    points = []
    for study, base_y, base_fosc, base_loss in (("table", 70.0, 3.0, 0.6),
                                                ("section3", 35.0, 2.0, 1.7)):
        y = base_y + np.linspace(0, 6, 10)
        fosc = base_fosc - np.linspace(0, 1, 10) + rng.normal(0, 0.01, 10)
        loss = base_loss + rng.normal(0, 0.05, 10)
        points += [section3.ClaimPoint(f"{study}{i}", study, f, 0.0, l, v, 1000)
                   for i, (f, l, v) in enumerate(zip(fosc, loss, y))]
    pooled = section3.rank_advantage(points, stratified=False)
    within = section3.rank_advantage(points)
    assert pooled.high < 0 < within.low
    rows, answer = section3.claim_rows(points, within)
    assert "yes: FOSC ranks the runs better" in answer and "Pooling all runs" in answer
    assert rows[0].startswith("| last-epoch feature | rho within Table 1 runs (n = 10) | "
                              "rho within Section 3 runs (n = 10) |")
    assert rows[2].startswith("| FOSC mean | -1.00 | -1.00 | -1.00 [")


def _pgd20_comparison(std, dyn):
    """seeds.compare's PGD-20 comparison of Standard seeds ``std`` and Dynamic seeds ``dyn``."""
    runs, records = [], {}
    for defense, values in (("standard", std), ("dynamic", dyn)):
        for i, v in enumerate(values):
            runs.append(Run(f"{defense}_s{i}", defense, i))
            records[f"{defense}_s{i}"] = _record(97, v)
    return {c.label: c for c in seeds.compare(runs, records)}["PGD-20"]


def test_leave_one_seed_out_names_the_run_a_spread_verdict_rests_on():
    # Standard is tight except one far-off seed: with it, Dynamic looks "more stable"; the
    # F interval without it (scipy's F quantiles, computed here) contains 1.
    std = [66.0, 75.1, 74.6, 75.4, 74.9]
    dyn = [73.2, 74.0, 73.5, 74.3, 73.1]
    c = _pgd20_comparison(std, dyn)
    assert c.spread_verdict() == "Dynamic is more stable across seeds"
    ratio = np.var(dyn, ddof=1) / np.var(std[1:], ddof=1)
    low = ratio / sps.f.ppf(0.975, 4, 3)
    high = ratio / sps.f.ppf(0.025, 4, 3)
    assert low < 1 < high
    line = next(x for x in seeds.sensitivity_lines([c]) if x.startswith("- PGD-20, spread"))
    assert "without standard_s0" in line and "rests on single runs" in line
    assert f"{np.sqrt(ratio):.2f} [{np.sqrt(low):.2f}, {np.sqrt(high):.2f}]" in line
    assert "but not without standard_s0" in seeds.summary_line([c])


def test_leave_one_seed_out_keeps_a_verdict_no_single_run_carries():
    # Dynamic higher by about 5 points on every seed: any 4 + 5 seeds still say "higher".
    std = [70.0, 70.5, 69.8, 70.3, 70.1]
    dyn = [75.2, 74.9, 75.4, 75.0, 75.3]
    c = _pgd20_comparison(std, dyn)
    assert c.verdict() == "Dynamic is higher"
    for name, other in seeds.leave_one_out(c):
        lo = sps.ttest_ind([v for n, v in zip(c.names[1], dyn) if n != name],
                           [v for n, v in zip(c.names[0], std) if n != name],
                           equal_var=False).confidence_interval(0.95).low
        assert lo > 0 and other.verdict() == "Dynamic is higher"
    assert any("holds with any one of the 10 seeds left out" in x
               for x in seeds.sensitivity_lines([c]))
