"""Shipped configs run unchanged on an 8-device host (a TPU v2/v3 or an 8-GPU node, simulated
with 8 forced CPU devices): the quickstart trains (shortened with --epochs) and evaluate.py
evaluates a test subset that no device count divides (the last batch is padded)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quickstart_and_evaluate_on_8_devices(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    run = str(tmp_path / "quick8")
    train = [sys.executable, "train.py", "--config", "configs/quickstart.py", "--epochs", "1",
             "--workdir", run, "--config.data.train_limit=128", "--config.eval.num_examples=36",
             "--config.quiet=True"]  # the config's eval.batch_size 250 stays: not a multiple of 8
    proc = subprocess.run(train, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "epoch 1: loss" in proc.stdout and "T' 1" in proc.stdout
    proc = subprocess.run([sys.executable, "evaluate.py", "--workdir", run, "--num-examples",
                           "36", "--attacks", "pgd10", "--no-honesty", "--quiet"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(run, "eval", "results.json")) as f:
        rec = json.load(f)
    rec = rec["runs"][0]
    assert rec["num_devices"] == 8 and rec["clean"]["n"] == 36 and rec["batch_size"] % 8 == 0

    # Clean accuracy recomputed here, on one device, with plain numpy on the same subset.
    from fosc_jax import load_classifier
    from fosc_jax.data import load_dataset
    from fosc_jax.data.subset import eval_subset_indices
    clf = load_classifier(run)
    ds = load_dataset("bundled", "mnist")
    idx = eval_subset_indices(len(ds.y_test), 36, 0)
    logits = np.asarray(clf.logits(ds.x_test[idx].astype(np.float32) / 255.0))
    assert rec["clean"]["correct"] == int((logits.argmax(-1) == ds.y_test[idx]).sum())
