"""The reproduction command: the paper-scale command end to end on tiny data, resumption,
the shared black-box pass, exported models, the eps-0.3 remedy and the committed results."""
import json
import os

import jax
import numpy as np
import pytest

from fosc_jax import rundir
from fosc_jax.config import mnist_config
from fosc_jax.evaluation.suite import Suite, attack_spec, transfer_attack
from fosc_jax.reproduce import __main__ as cli
from fosc_jax.reproduce import plan
from fosc_jax.reproduce.plan import RUNS, SCALES, run_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMITTED = os.path.join(ROOT, "results", "mnist_cpu")
MNIST_DIR = os.environ.get("FOSC_JAX_MNIST_DIR")


def test_scales_compress_the_schedule_in_proportion():
    cpu = SCALES["cpu"]
    c = run_config(RUNS[2], cpu, "bundled")          # dynamic_s0
    assert c.num_epochs == cpu.epochs and c.attack.eps == 0.3 and c.batch_size == 128
    assert tuple(c.optim.lr_drop_epochs) == (round(20 * cpu.epochs / 50), round(40 * cpu.epochs / 50))
    assert c.defense.t_prime == round(40 * cpu.epochs / 50)
    assert (c.attack.num_steps, c.attack.bn_mode) == (10, "eval")
    paper = run_config(RUNS[2], SCALES["paper"], "bundled")
    assert (paper.num_epochs, tuple(paper.optim.lr_drop_epochs), paper.defense.t_prime,
            paper.data.train_limit) == (50, (20, 40), 40, 0)
    assert cpu.test_images >= 5000
    demo = next(r for r in RUNS if r.role == "demo")
    assert run_config(demo, cpu, "bundled").attack.bn_mode == "train"


@pytest.mark.slow
def test_paper_scale_command_runs_end_to_end_on_tiny_data_and_resumes(tmp_path, capsys,
                                                                      monkeypatch):
    # One defense and the surrogate (a Standard run): the other runs repeat the same code
    # paths (each defense has its own tests), and dropping them keeps CI under its budget.
    runs = tuple(r for r in RUNS if r.name in ("dynamic_s0", "surrogate"))
    monkeypatch.setattr(plan, "RUNS", runs)
    out = str(tmp_path / "repro")
    args = ["mnist", "--scale", "paper", "--smoke", "--data", "bundled", "--out", out]
    # Every stage but AutoAttack (its attacks and runner have their own tests; compiling them
    # for mnist_cnn would add a minute to CI).
    assert cli.main(args + ["--stages", "train,export,eval,report"]) == 0
    first = capsys.readouterr().out
    assert "first epoch took" in first and "training left" in first
    text = open(os.path.join(out, "RESULTS.md")).read()
    assert "| Dynamic |" in text
    assert "## Black-box accuracy" in text and "python -m fosc_jax.reproduce mnist --scale paper" in text
    for run in runs:
        rec = json.load(open(os.path.join(out, "eval", f"{run.name}.json")))
        assert rec["clean"]["n"] == 100
        assert (rec["black_box"] is None) == (run.role == "surrogate")
        assert os.path.exists(os.path.join(out, "models", run.name, "variables.npz"))
    assert "AutoAttack: not run yet" in text
    for fig in ("fig1a_dynamic_s0.png", "fosc_density.png", "eps_sweep.png"):
        assert os.path.getsize(os.path.join(out, "figures", fig)) > 1000
    # Rerunning skips every finished stage.
    assert cli.main(args + ["--stages", "train,export,eval"]) == 0
    again = capsys.readouterr().out
    assert again.count("finished") == len(runs) and "[eval]" not in again


def test_cli_refuses_missing_data_in_one_line(capsys, monkeypatch):
    monkeypatch.delenv("FOSC_JAX_MNIST_DIR", raising=False)
    assert cli.main(["mnist", "--out", "/tmp/unused"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert cli.main(["mnist", "--data", "/no/such/dir"]) == 2


def _tiny_trained(tmp_path, name, seed):
    from fosc_jax.training import train_and_evaluate
    import tiny_config
    cfg = tiny_config.get_config("standard")
    cfg.seed = seed
    cfg.name = name
    wd = str(tmp_path / name)
    train_and_evaluate(cfg, wd)
    return wd


def test_exported_model_equals_checkpoint_and_transfer_matches_per_target_suite(tmp_path):
    runs = [_tiny_trained(tmp_path, f"m{s}", s) for s in (0, 1, 2)]
    exported = rundir.export_classifier(runs[0], str(tmp_path / "export"))
    a, b = rundir.load_classifier(runs[0]), rundir.load_classifier(exported)
    x = np.random.default_rng(0).random((8, 28, 28, 1), np.float32)
    np.testing.assert_array_equal(np.asarray(a.logits(x)), np.asarray(b.logits(x)))
    assert b.epoch == a.epoch and b.config.name == a.config.name

    from fosc_jax.data import load_dataset
    ds = load_dataset("bundled", "mnist")
    xt, yt = ds.x_test[:40], ds.y_test[:40].astype(np.int32)
    surrogate, targets = rundir.load_classifier(runs[2]), [a, rundir.load_classifier(runs[1])]
    spec = attack_spec("pgd10")
    shared = transfer_attack(surrogate, targets, xt, yt, spec, 0.3, batch_size=16, seed=0)
    for target, got in zip(targets, shared):
        suite = Suite(target, xt, yt, batch_size=16, seed=0, progress=False)
        want = suite.attack(spec, 0.3, key_name="bb/pgd10", surrogate=surrogate)["correct"]
        np.testing.assert_array_equal(got, want)


@pytest.mark.skipif(not MNIST_DIR, reason="set FOSC_JAX_MNIST_DIR to the MNIST IDX folder")
@pytest.mark.parametrize("bn_mode", ["eval", "train"])
def test_eps_03_short_run_leaves_chance_only_with_the_remedy(bn_mode):
    """40 Standard-AT steps at the paper's eps 0.3 on real MNIST: with the inference-mode BN
    attack (the remedy, "eval") test accuracy leaves chance and the dense layer lives; with a
    train-mode BN attack every dense unit dies and the output is constant (the collapse)."""
    from fosc_jax import training
    from fosc_jax.data import load_dataset
    cfg = mnist_config("standard")
    cfg.attack.bn_mode = bn_mode
    ds = load_dataset(f"files:{MNIST_DIR}", "mnist")
    trainer = training.Trainer(cfg, (28, 28, 1), 10, steps_per_epoch=40)
    state = trainer.init_state(jax.random.PRNGKey(0))
    idx = np.random.default_rng(0).integers(0, 10000, (40, 128))
    x_train, y_train = jax.numpy.asarray(ds.x_train[:10000]), jax.numpy.asarray(ds.y_train[:10000])
    state, m = trainer.run_steps(state, x_train, y_train, idx, trainer.settings_for_epoch(0))
    x_test = ds.x_test[:500].astype(np.float32) / 255
    logits, inter = trainer.model.apply(
        {"params": state.params, "batch_stats": state.batch_stats}, x_test, train=False,
        capture_intermediates=True)
    accuracy = np.mean(np.argmax(np.asarray(logits), -1) == ds.y_test[:500])
    # The collapse kills every unit of the dense-128 layer (the only ReLU without BatchNorm).
    dense = np.asarray(inter["intermediates"]["Dense_0"]["__call__"][0])
    alive = np.mean(np.any(dense > 0, axis=0))
    if bn_mode == "eval":
        assert accuracy > 0.3 and alive > 0.02, (accuracy, alive)
    else:
        assert accuracy < 0.2 and alive < 0.02, (accuracy, alive)


@pytest.mark.skipif(not os.path.exists(os.path.join(COMMITTED, "eval", "dynamic_s0.json")),
                    reason="no committed reproduction results")
@pytest.mark.skipif(not MNIST_DIR, reason="set FOSC_JAX_MNIST_DIR to the MNIST IDX folder")
@pytest.mark.parametrize("name", ["dynamic_s0", "standard_s0"])
def test_committed_model_rescores_to_its_committed_numbers(name):
    """A committed model, re-scored on 400 of the same test images, agrees with its results
    JSON within binomial noise (z = 3)."""
    from fosc_jax.data import load_dataset
    from fosc_jax.evaluation.api import evaluate_classifier
    from fosc_jax.reproduce.pipeline import test_subset
    rec = json.load(open(os.path.join(COMMITTED, "eval", f"{name}.json")))
    clf = rundir.load_classifier(os.path.join(COMMITTED, "models", name))
    ds = load_dataset(f"files:{MNIST_DIR}", "mnist")
    x, y, _ = test_subset(ds, rec["clean"]["n"])
    n = 400
    got = evaluate_classifier(clf, x[:n], y[:n], attacks=("pgd10",), batch_size=200, seed=0,
                              honesty=False, progress=False)
    for ours, committed in ((got["clean"], rec["clean"]),
                            (got["white_box"]["pgd10"], rec["white_box"]["pgd10"])):
        p = committed["accuracy"]
        se = np.sqrt(max(p * (1 - p), 1e-3) / n)
        assert abs(ours["accuracy"] - p) <= 3 * se + 1e-9, (name, ours, committed)
