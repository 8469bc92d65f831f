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
    assert cpu.test_images is None          # the full 10,000 test images
    demo = next(r for r in RUNS if r.role == "demo")
    assert run_config(demo, cpu, "bundled").attack.bn_mode == "train"


@pytest.mark.slow
def test_paper_scale_command_runs_end_to_end_on_tiny_data_and_resumes(tmp_path, capsys,
                                                                      monkeypatch):
    # One defense and the surrogate (a Standard run): the other runs repeat the same code
    # paths (each defense has its own tests), and dropping them keeps CI under its budget.
    runs = tuple(r for r in RUNS if r.name in ("dynamic_s0", "surrogate", "s3_pgd",
                                               "s3_fgsm_pgd"))
    monkeypatch.setattr(plan, "RUNS", runs)
    out = str(tmp_path / "repro")
    args = ["mnist", "--scale", "paper", "--smoke", "--data", "bundled", "--out", out]
    # Every stage but AutoAttack (its attacks and runner have their own tests; compiling them
    # for mnist_cnn would add a minute to CI).
    assert cli.main(args + ["--stages", "train,export,eval,section3,convergence,report"]) == 0
    first = capsys.readouterr().out
    assert "first epoch took" in first and "training left" in first
    text = open(os.path.join(out, "RESULTS.md")).read()
    assert "| Dynamic |" in text
    assert "## Black-box accuracy" in text and "python -m fosc_jax.reproduce mnist --scale paper" in text
    assert "## Section 3: convergence quality against robustness" in text
    conv = json.load(open(os.path.join(out, "eval", "convergence", "dynamic_s0.json")))
    assert conv["n"] == 20 and conv["budget"] == "cpu"     # the defense model only
    assert not os.path.exists(os.path.join(out, "eval", "convergence", "surrogate.json"))
    prov = json.load(open(os.path.join(out, "provenance.json")))["runs"]
    assert "convergence" in prov["dynamic_s0"] and "convergence" not in prov["surrogate"]
    assert "## FOSC as an evaluation diagnostic" in text
    assert "### The paper's claims at this scale" in text
    for name in ("s3_pgd", "s3_fgsm_pgd"):   # cross-tested on their own subset
        rec = json.load(open(os.path.join(out, "eval", "section3", f"{name}.json")))
        assert rec["n"] == 50 and set(rec["attacks"]) == {"pgd20", "pgd10"}
        cfg = json.load(open(os.path.join(out, "runs", name, "config.json")))
        assert cfg["num_epochs"] == 2 and cfg["data"]["train_limit"] == 128
    assert json.load(open(os.path.join(out, "runs", "s3_fgsm_pgd", "config.json")))[
        "defense"]["fgsm_epochs"] == 1      # 20 of the paper's 50 epochs, scaled to 2
    assert os.path.getsize(os.path.join(out, "figures", "fig3_fgsm_then_pgd.png")) > 1000
    for run in runs:
        if run.study != "table":
            continue
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
    assert cli.main(args + ["--stages", "section3"]) == 0
    assert "[section3] s3_" not in capsys.readouterr().out
    # A defense scored white-box but still waiting for the surrogate's transfer pass (a
    # piece run without the surrogate) is reported with its numbers and a pending line.
    pending = os.path.join(out, "eval", "white_box_only")
    os.makedirs(pending, exist_ok=True)
    rec = json.load(open(os.path.join(out, "eval", "dynamic_s0.json")))
    del rec["black_box"]                     # as evaluate_all writes it before the transfer
    json.dump(rec, open(os.path.join(pending, "dynamic_s0.json"), "w"))
    os.remove(os.path.join(out, "eval", "dynamic_s0.json"))
    assert cli.main(args + ["--stages", "report"]) == 0
    text = open(os.path.join(out, "RESULTS.md")).read()
    assert "**Black-box pending** for dynamic_s0" in text and "**Partial:**" not in text
    white = text.split("## White-box accuracy")[1].split("## Black-box accuracy")[0]
    black = text.split("## Black-box accuracy")[1].split("\n## ")[0]
    assert "| dynamic_s0 |" in white and "| dynamic_s0 |" not in black


def test_section3_runs_follow_the_papers_sweeps():
    cpu = SCALES["cpu"]
    s3 = {r.name: run_config(r, cpu, "bundled") for r in RUNS if r.study == "section3"}
    step = {n: c for n, c in s3.items() if n.startswith("s3_step_eps")}
    assert sorted(c.attack.step_size / 0.3 for c in step.values()) == [1 / 8, 1 / 4, 1 / 2, 1]
    assert {c.attack.num_steps for c in step.values()} == {20}
    count = {n: c for n, c in s3.items() if n.startswith("s3_steps")}
    assert sorted(c.attack.num_steps for c in count.values()) == [10, 20, 30, 40]
    assert all(abs(c.attack.step_size - 0.3 / 6) < 1e-12 for c in count.values())
    for c in s3.values():     # the analysis scale, lr drops at the paper's 40% and 80%
        assert (c.num_epochs, c.data.train_limit) == (cpu.s3_epochs, cpu.s3_train_images)
        assert tuple(c.optim.lr_drop_epochs) == (round(0.4 * cpu.s3_epochs),
                                                 round(0.8 * cpu.s3_epochs))
    assert s3["s3_fgsm_pgd"].defense.fgsm_epochs == round(0.4 * cpu.s3_epochs)
    seeds = {(r.defense, r.seed) for r in RUNS if r.role == "defense" and r.study == "table"}
    for d in ("standard", "dynamic"):
        assert {s for dd, s in seeds if dd == d} == {0, 1, 2, 3, 4}


def test_a_stop_signal_ends_the_reproduction_not_just_the_current_run(tmp_path, monkeypatch):
    """SIGTERM used to checkpoint the run in progress and then start the next run; now the
    whole reproduction stops (resumable), and the command exits 75 (EX_TEMPFAIL)."""
    from fosc_jax.reproduce import pipeline
    runs = tuple(r for r in RUNS if r.name in ("s3_pgd", "s3_fgsm_pgd"))
    scale = plan.SCALES["cpu"]
    import dataclasses
    scale = dataclasses.replace(scale, **plan.SMOKE)
    out = str(tmp_path / "repro")
    calls = []
    stop = lambda step: calls.append(step) or True  # noqa: E731  (a signal arrived at once)
    assert pipeline.train_all(runs, scale, "bundled", out, should_stop=stop) is False
    assert calls, "the flag is polled by the training loop"
    first = pipeline.epochs_done(pipeline.run_dir(out, runs[0]))
    assert first < scale.s3_epochs
    assert not os.path.exists(pipeline.run_dir(out, runs[1]))
    monkeypatch.setattr(pipeline, "train_all", lambda *a, **k: False)
    assert cli.main(["mnist", "--smoke", "--data", "bundled", "--out", out,
                     "--stages", "train,eval"]) == cli.EXIT_STOPPED == 75


def test_seed_runs_train_as_one_program_when_asked(tmp_path):
    """--one-program yes: the unstarted seeds of Standard and Dynamic share one vmapped
    program (fosc_jax.training.multirun; equality with lone runs is tests/test_multirun.py),
    each keeping its own run folder and exported model; started runs train alone."""
    from fosc_jax.reproduce import pipeline
    runs = tuple(r for r in RUNS if r.name in ("standard_s2", "dynamic_s2", "standard_s3"))
    out = str(tmp_path / "repro")
    import dataclasses
    scale = dataclasses.replace(plan.SCALES["cpu"], **{**plan.SMOKE, "epochs": 1})
    os.makedirs(pipeline.run_dir(out, runs[2]))
    with open(os.path.join(pipeline.run_dir(out, runs[2]), "metrics.jsonl"), "w") as f:
        f.write('{"epoch": 1}\n')           # standard_s3 "started": not grouped
    groups = pipeline.shared_program_groups(runs, scale, "bundled", out)
    assert [[r.name for r in g] for g in groups] == [["standard_s2", "dynamic_s2"]]
    os.remove(os.path.join(pipeline.run_dir(out, runs[2]), "metrics.jsonl"))
    assert cli.main(["mnist", "--smoke", "--data", "bundled", "--out", out, "--stages",
                     "train,export", "--runs", "standard_s2,dynamic_s2",
                     "--one-program", "yes"]) == 0
    for run in runs[:2]:
        rows = [json.loads(line) for line in open(os.path.join(out, "runs", run.name,
                                                               "metrics.jsonl"))]
        assert len(rows) == 2 and all(r["runs_in_program"] == 2 for r in rows)
        assert rundir.export_complete(os.path.join(out, "models", run.name))


def test_cli_rejects_unknown_runs_in_one_line(capsys):
    assert cli.main(["mnist", "--data", "bundled", "--runs", "standard_s9"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --runs:") and err.count("\n") == 1


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
