"""K runs in one compiled program (fosc_jax.training.multirun) equal the same runs trained
alone by train_and_evaluate (config.executor = "compiled"), a resume included.

Tolerance: vmap batches the convolutions differently, so results agree to float rounding,
not bitwise. Observed on XLA:CPU after 2 epochs of the tiny config (8 steps): parameters,
losses and FOSC within ~5e-7 of their scale. The test asks |a - b| <= 1e-6 + 1e-5 * max|b|
per leaf / metric / sample, far below any real difference (one SGD step moves weights by
~1e-3; one example in a batch of 16 moves an accuracy by 0.06). The difference grows with
training: the attack steps by sign(g), so a gradient component near 0 can flip sign and
move a pixel by a whole step, and from then on the runs drift apart like two trainings on
different hardware (seen for Standard seed 1 after 8 steps: a few examples' FOSC 2e-3 apart,
everything else ~1e-7; for Standard seed 0 with steps_per_call 2: epoch 1 within 2e-7,
epoch 2's loss 1e-4 apart), hence the short runs here."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from fosc_jax import load_classifier
from fosc_jax.errors import ConfigError
from fosc_jax.rundir import metrics as metric_files
from fosc_jax.training import load_training_data, train_and_evaluate
from fosc_jax.training.group import check_group, stack_settings
from fosc_jax.training.multirun import train_many
from fosc_jax.defenses import settings_for_epoch
from tiny_config import get_config

RTOL, ATOL = 1e-5, 1e-6
NOT_COMPARED = {"seconds", "images_per_sec", "executor", "runs_in_program"}  # timing, path


def _config(defense: str, seed: int, c_max: float = 20.0, epochs: int = 2):
    c = get_config(defense, epochs=epochs)
    c.seed = seed
    c.executor = "compiled"
    c.defense.c_max = c_max   # FOSC of the tiny model is ~20: some examples stop early
    return c


def _close(a, b, what):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = np.nanmax(np.abs(b)) if b.size and np.any(np.isfinite(b)) else 0.0
    np.testing.assert_allclose(a, b, rtol=0, atol=ATOL + RTOL * scale, err_msg=what)


def _assert_each_equals_alone(configs, tmp_path, stop_at=None) -> list:
    """Train ``configs`` in one program and each alone (both stopped at step ``stop_at``
    and resumed, if given); assert every run's metrics, FOSC samples and weights agree."""
    ds = load_training_data(configs[0])
    group = [str(tmp_path / f"group{k}") for k in range(len(configs))]
    if stop_at is not None:
        train_many(configs, group, dataset=ds, should_stop=lambda step: step >= stop_at)
        assert all(metric_files.read_metrics(w) == [] for w in group)
    rows = train_many(configs, group, dataset=ds)
    assert [r["epoch"] for r in rows] == [configs[0].num_epochs] * len(configs)
    for k, config in enumerate(configs):
        alone = str(tmp_path / f"alone{k}")  # the same stop and resume, run by itself
        if stop_at is not None:
            train_and_evaluate(config, alone, dataset=ds, should_stop=lambda s: s >= stop_at)
        train_and_evaluate(config, alone, dataset=ds)
        ours, theirs = metric_files.read_metrics(group[k]), metric_files.read_metrics(alone)
        assert len(ours) == len(theirs) == config.num_epochs
        for a, b in zip(ours, theirs):
            assert set(a) - {"runs_in_program"} == set(b)
            for name in set(b) - NOT_COMPARED:
                if isinstance(b[name], float):
                    _close(a[name], b[name], f"run {k} epoch {b['epoch']} {name}")
                else:
                    assert a[name] == b[name], (k, name)
        for epoch in range(1, config.num_epochs + 1):
            fa = metric_files.load_fosc_sample(group[k], epoch)
            fb = metric_files.load_fosc_sample(alone, epoch)
            assert set(fa) == set(fb)
            for name in fb:
                if fb[name].dtype.kind == "f":
                    _close(fa[name], fb[name], f"run {k} fosc sample {epoch} {name}")
                else:
                    np.testing.assert_array_equal(fa[name], fb[name])
        va, vb = load_classifier(group[k]).variables, load_classifier(alone).variables
        jax.tree_util.tree_map_with_path(
            lambda p, x, y: _close(x, y, f"run {k} {jax.tree_util.keystr(p)}"), va, vb)
    return rows


@pytest.mark.slow
def test_three_runs_in_one_program_equal_each_run_alone_after_a_resume(tmp_path):
    configs = [_config("dynamic", 0), _config("dynamic", 1), _config("standard", 0)]
    # Stopped after 2 of the 4 steps of epoch 1, then resumed from each run's checkpoint.
    rows = _assert_each_equals_alone(configs, tmp_path, stop_at=2)
    steps = [r["attack_steps_mean"] for r in rows]
    assert steps[0] < 3 and steps[2] == 3   # Dynamic stopped examples early, Standard not


@pytest.mark.slow
def test_curriculum_and_unsecured_share_a_program_with_standard(tmp_path):
    configs = [_config("curriculum", 0), _config("unsecured", 1), _config("standard", 0)]
    rows = _assert_each_equals_alone(configs, tmp_path)
    assert rows[0]["curriculum_k"] == 1 and rows[1]["fosc_mean"] is None   # budget 0: no FOSC


@pytest.mark.slow
def test_scanned_steps_equal_each_run_alone(tmp_path):
    # One epoch: with steps_per_call 2 the second epoch of Standard seed 0 drifted to 1e-4
    # (loss) after a sign flip in its attack (module docstring); the first agrees to 2e-7.
    configs = [_config("dynamic", 0, epochs=1), _config("standard", 1, epochs=1)]
    for c in configs:
        c.steps_per_call = 2      # both sides: a lax.scan over the 2 steps of each chunk
    _assert_each_equals_alone(configs, tmp_path)


@pytest.mark.slow
def test_a_group_whose_runs_stand_at_different_steps_is_refused(tmp_path):
    configs = [_config("standard", 0), _config("dynamic", 0)]
    ds = load_training_data(configs[0])
    group = [str(tmp_path / "a"), str(tmp_path / "b")]
    train_many(configs, group, dataset=ds, should_stop=lambda step: step >= 2)
    train_and_evaluate(configs[0], group[0], dataset=ds, should_stop=lambda step: True)
    with pytest.raises(ConfigError, match="different steps"):
        train_many(configs, group, dataset=ds)


def test_a_group_refuses_configs_that_cannot_share_a_program():
    base = get_config("dynamic")
    other = get_config("dynamic")
    other.batch_size = 32
    with pytest.raises(ConfigError, match="batch_size differs"):
        check_group([base, other])
    with pytest.raises(ConfigError, match="different attack or training losses"):
        check_group([base, get_config("trades")])
    seeded = get_config("dynamic")
    seeded.seed = 1
    with pytest.raises(ConfigError, match="data.subset"):
        check_group([base, seeded])          # tiny_config: train_limit with a random subset
    check_group([base, seeded], loads_data=False)
    weighted = [get_config("dynamic"), get_config("unsecured")]
    for c in weighted:
        c.defense.loss_weighting = True
    with pytest.raises(ConfigError, match="loss_weighting"):
        check_group(weighted)
    check_group([base, get_config("standard"), get_config("curriculum"),
                 get_config("unsecured")])


def test_group_settings_merge_budgets_and_refuse_fgsm_next_to_pgd():
    standard = settings_for_epoch(get_config("standard"), 0, 16)
    clean = settings_for_epoch(get_config("unsecured"), 0, 16)
    dynamic = settings_for_epoch(get_config("dynamic"), 0, 16)
    merged = stack_settings([standard, clean, dynamic])
    assert merged.max_steps == 3 and merged.early_exit
    assert merged.budget.shape == (3, 16)
    assert np.all(np.asarray(merged.budget[1]) == 0)      # Unsecured: budget 0, stays clean
    np.testing.assert_array_equal(merged.budget[0], standard.budget)
    fgsm = settings_for_epoch(get_config("fgsm_pgd"), 0, 16)
    with pytest.raises(ConfigError, match="random_start differs"):
        stack_settings([standard, fgsm])


@pytest.mark.slow
def test_bench_multirun_quick_json(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = tmp_path / "multirun.json"
    proc = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "bench_multirun.py"),
                           "--quick", "--json", str(out)], cwd=root, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["model"], r["k"]) for r in rows] == [("mnist_cnn", 2)]
    assert rows[0]["speedup"] > 0 and rows[0]["vmapped_img_s"] > 0
