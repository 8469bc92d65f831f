"""Tests for fosc_jax.reporting (report, figures, the CLI), and an end-to-end train -> evaluate -> report."""
from __future__ import annotations

import importlib.util
import json
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

from fosc_jax.reporting import cli, report
from fosc_jax.classifier import Classifier
from fosc_jax.evaluation import write_results

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def assert_nontrivial_png(path: str) -> None:
    assert os.path.exists(path), path
    assert os.path.getsize(path) > 5000, path
    img = matplotlib.image.imread(path)
    colours = np.unique((img[..., :3].reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colours) > 20, f"{path} looks blank"


# ------------------------------------------------------------------ numerics


def test_reflected_kde_is_the_brute_force_reflected_sum():
    """Independent formula: (1/nh) sum_i [phi((g-x_i)/h) + phi((g+x_i)/h)] with Scott's h."""
    x = np.random.default_rng(0).gamma(1.5, 0.02, size=300)
    h = np.std(x, ddof=1) * x.size ** (-0.2)
    grid = np.linspace(-0.05, 0.3, 141)
    phi = lambda d: np.exp(-0.5 * d ** 2) / np.sqrt(2 * np.pi)  # noqa: E731
    want = np.array([(phi((g - x) / h) + phi((g + x) / h)).sum() / (x.size * h) for g in grid])
    want[grid < 0] = 0.0
    np.testing.assert_allclose(report.reflected_kde(x, grid), want, rtol=1e-9, atol=1e-12)


def test_reflected_kde_keeps_its_mass_on_fosc_ge_0():
    x = np.concatenate([np.zeros(50), np.random.default_rng(1).exponential(0.01, 200)])
    grid = np.linspace(0, 1, 20001)
    dens = report.reflected_kde(x, grid)
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=2e-3)  # all mass at >= 0
    assert report.reflected_kde(x, [-0.01])[0] == 0.0
    assert np.trapezoid(report.reflected_kde([0.2] * 5, grid), grid) == pytest.approx(1, abs=1e-3)
    with pytest.raises(ValueError):
        report.reflected_kde([np.nan], grid)


def test_fosc_bins_match_bruteforce_loop():
    rng = np.random.default_rng(1)
    fosc = np.concatenate([rng.uniform(-0.02, 0.12, 400), np.linspace(0, 0.1, 21), [np.nan]])
    loss = rng.uniform(0, 3, fosc.size)
    correct = rng.random(fosc.size) > 0.4
    got = report.fosc_bins(fosc, correct, loss, num_bins=20, lo=0.0, hi=0.1)
    edges = np.linspace(0.0, 0.1, 21)
    outside = 0
    members = [[] for _ in range(20)]
    for f, c, l in zip(fosc, correct, loss):
        placed = False
        for b in range(20):
            last = b == 19
            if edges[b] <= f < edges[b + 1] or (last and f == edges[b + 1]):
                members[b].append((c, l))
                placed = True
                break
        outside += not placed
    assert got["outside"] == outside
    for b in range(20):
        assert got["count"][b] == len(members[b])
        if members[b]:
            assert got["accuracy"][b] == pytest.approx(np.mean([m[0] for m in members[b]]))
            assert got["mean_loss"][b] == pytest.approx(np.mean([m[1] for m in members[b]]))
        else:
            assert np.isnan(got["accuracy"][b])
    with pytest.raises(ValueError):
        report.fosc_bins(fosc, correct[:-1], loss)


def test_pick_epochs_and_names():
    assert report.pick_epochs([0, 1, 2, 3, 4, 5, 6, 7, 8]) == [0, 4, 8]
    assert report.pick_epochs([3, 1]) == [1, 3]
    assert report.pick_epochs(range(10), [2, 5]) == [2, 5]
    with pytest.raises(ValueError, match="available"):
        report.pick_epochs([0, 1], [7])
    assert report.run_names(["a/x", "b/y"]) == ["x", "y"]
    assert report.run_names(["a/x", "b/x"]) == ["a/x", "b/x"]


# ------------------------------------------------------------------ fake runs


def _fake_run(root, name: str, defense: str, epochs: int = 6, sweep: bool = False) -> str:
    """A run folder as training writes it (epochs 1-based)."""
    run = os.path.join(root, name)
    os.makedirs(os.path.join(run, "fosc"))
    rng = np.random.default_rng(len(name))
    with open(os.path.join(run, "metrics.jsonl"), "w") as f:
        for e in range(epochs):
            c_t = max(0.5 - e * 0.1, 0.0) if defense == "dynamic" else None
            row = dict(epoch=e + 1, lr=0.01, c_t=c_t, curriculum_k=None, train_loss=2 - 0.2 * e,
                       train_clean_acc=0.5 + 0.05 * e, train_adv_acc=0.3 + 0.05 * e,
                       fosc_mean=0.1 / (e + 1), fosc_p50=0.08 / (e + 1), fosc_p90=0.2 / (e + 1),
                       attack_steps_mean=10 - e if c_t is not None else 10.0,
                       test_clean_acc=0.6 + 0.04 * e, test_pgd10_acc=0.2 + 0.05 * e,
                       images_per_sec=1000.0, seconds=3.0)
            f.write(json.dumps(row) + "\n")
            np.savez(os.path.join(run, "fosc", f"epoch_{e + 1:04d}.npz"),
                     fosc=rng.gamma(2.0, 0.05 / (e + 1), 300).astype(np.float32),
                     loss=rng.uniform(0, 2, 300).astype(np.float32),
                     num_steps=rng.integers(1, 11, 300).astype(np.int32))
    if sweep:
        entry = lambda a: dict(accuracy=a, correct=int(a * 100), n=100)  # noqa: E731
        rec = dict(defense=defense, name=name, eps=8 / 255, clean=entry(0.8),
                   white_box=dict(pgd10=entry(0.45)),
                   eps_sweep=[dict(eps=k / 255, **entry(a)) for k, a in
                              ((2, 0.7), (4, 0.6), (6, 0.5))])
        write_results(os.path.join(run, "eval"), [rec])
    return run


def test_report_from_fake_runs(tmp_path):
    a = _fake_run(tmp_path, "dynamic_run", "dynamic", sweep=True)
    b = _fake_run(tmp_path, "standard_run", "standard")
    empty = os.path.join(tmp_path, "empty_run")
    os.makedirs(empty)
    out = os.path.join(tmp_path, "report")
    made = cli.main(["--workdir", a, b, empty, "--out", out, "--no-attack",
                        "--epochs", "1,6"])
    names = sorted(os.path.basename(p) for p in made)
    assert names == ["eps_sweep.png", "fosc_density.png", "training_curves.png"]
    for path in made:
        assert_nontrivial_png(path)
    index = open(os.path.join(out, "index.md")).read()
    for name in names:
        assert f"]({name})" in index
    assert "[1, 6]" in index and "Not drawn" not in index
    np.testing.assert_allclose(report.read_eps_sweep(a),
                               [(2 / 255, 0.7), (4 / 255, 0.6), (6 / 255, 0.5), (8 / 255, 0.45)])
    # a run with nothing in it: every figure is skipped and said so
    made = report.make_report([empty], os.path.join(tmp_path, "r2"), attack_figures=False)
    assert made == {}
    assert "no RUN/metrics.jsonl" in open(os.path.join(tmp_path, "r2", "index.md")).read()


def test_bad_run_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        report.make_report([str(tmp_path / "nope")], str(tmp_path / "out"))
    run = _fake_run(tmp_path, "r", "dynamic", epochs=2)
    with open(os.path.join(run, "metrics.jsonl"), "a") as f:
        f.write("{not json\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:3"):
        report.read_metrics(run)
    np.savez(os.path.join(run, "fosc", "epoch_0007.npz"), fosc=np.zeros(3, np.float32))
    assert report.fosc_epochs(run) == [1, 2, 7]
    with pytest.raises(ValueError, match="missing arrays"):
        report.load_fosc_sample(run, 7)


# ------------------------------------------------------------------ Figure 1 from a model


class TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x, *, train: bool = False):
        return nn.Dense(3)(nn.tanh(nn.Dense(16)(x.reshape((x.shape[0], -1)))))


def test_figure1_data_and_plots(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 6, 6, 1)).astype(np.uint8)
    y = rng.integers(0, 3, 40).astype(np.int32)
    clf = Classifier(TinyNet(), TinyNet().init(jax.random.key(0), jnp.zeros((1, 6, 6, 1))))
    data = report.fosc_accuracy_data(clf, x, y, eps=0.1, batch_size=16, progress=False)
    assert data["fosc"].shape == data["loss"].shape == data["correct"].shape == (40,)
    assert np.all(data["fosc"] >= -1e-5)  # FOSC w.r.t. the clean input is non-negative
    bins = report.fosc_bins(data["fosc"], data["correct"], data["loss"],
                            hi=float(data["fosc"].max()))
    assert bins["count"].sum() == 40
    tr = report.fosc_trace_data(clf, x, y, eps=0.1, num_examples=20)
    assert tr["fosc_trace"].shape == tr["loss_trace"].shape == (11, 20)
    assert np.all(np.isfinite(tr["fosc_trace"]))
    assert np.mean(tr["loss_trace"][-1]) > np.mean(tr["loss_trace"][0])  # PGD raises the loss
    from fosc_jax.reporting import figures
    assert_nontrivial_png(figures.plot_fosc_bins(bins, str(tmp_path / "a.png")))
    assert_nontrivial_png(figures.plot_fosc_traces(tr["fosc_trace"], tr["loss_trace"],
                                                   str(tmp_path / "b.png")))


# ------------------------------------------------------------------ end to end


@pytest.mark.slow
def test_train_evaluate_report_end_to_end(tmp_path):
    training = pytest.importorskip("fosc_jax.training")
    spec = importlib.util.spec_from_file_location("quickstart",
                                                  os.path.join(REPO, "configs", "quickstart.py"))
    quickstart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quickstart)
    config = quickstart.get_config()
    config.num_epochs = 1
    config.data.train_limit = 128
    config.defense.t_prime = 1
    config.optim.lr_drop_epochs = ()
    config.eval.num_examples = 32
    config.eval.batch_size = 32
    config.fosc_sample_size = 200
    config.quiet = True
    run = str(tmp_path / "quick")
    training.train_and_evaluate(config, run)

    sys.path.insert(0, REPO)
    import evaluate
    records = evaluate.main(["--workdir", run, "--num-examples", "32", "--attacks", "pgd10",
                             "--eps-sweep", "0.15", "--quiet"])
    rec = records[0]
    assert rec["clean"]["n"] == 32 and rec["batch_size"] == 32
    assert rec["epoch"] == 1 and rec["defense"] == "dynamic"
    assert set(rec["white_box"]) == {"pgd10"} and rec["honesty"] is not None
    for ext in ("json", "csv", "md"):
        assert os.path.getsize(os.path.join(run, "eval", f"results.{ext}")) > 0
    assert "| Dynamic |" in open(os.path.join(run, "eval", "results.md")).read()

    out = str(tmp_path / "report")
    made = cli.main(["--workdir", run, "--out", out, "--num-examples", "32", "--quiet"])
    names = sorted(os.path.basename(p) for p in made)
    assert names == ["eps_sweep.png", "fig1a_quick.png", "fig1b_quick.png",
                     "fosc_density.png", "training_curves.png"]
    for path in made:
        assert_nontrivial_png(path)
