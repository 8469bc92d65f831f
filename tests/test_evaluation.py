"""Tests for fosc_jax.evaluation: accuracy, worst case, padding, sharding, honesty checks, tables.

A tiny MLP is trained in seconds on synthetic 8x8 images of 4 classes (random +-0.1
prototypes plus noise), so at eps = 0.08 PGD leaves an intermediate accuracy. The
"gradient-masked" model is the same network behind ``round(x * 255) / 255``: identical
predictions, zero input gradients, so white-box attacks never move from their start.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fosc_jax.classifier import Classifier
from fosc_jax.config import base_config
from fosc_jax.evaluation import (evaluate_classifier, honesty, markdown_table, parse_eps_list,
                                 read_results, eval_subset_indices, worst_case, write_results)
from fosc_jax.evaluation.suite import Suite, attack_spec, check_inputs
from fosc_jax.evaluation.tables import csv_table, row_labels

EPS = 0.08
BATCH = 64
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_data(n: int, seed: int, num_classes: int = 4, hw: int = 8):
    protos = np.random.default_rng(1234).choice([0.4, 0.6], size=(num_classes, hw, hw, 1))
    rng = np.random.default_rng(seed)
    y = rng.integers(0, num_classes, n).astype(np.int32)
    x = np.clip(protos[y] + rng.normal(0, 0.08, (n, hw, hw, 1)), 0, 1)
    return np.round(x * 255).astype(np.uint8), y


class MLP(nn.Module):
    hidden: int = 32
    num_classes: int = 4
    quantise: bool = False  # round inputs to the uint8 grid: zero input gradients

    @nn.compact
    def __call__(self, x, *, train: bool = False):
        if self.quantise:
            x = jnp.round(x * 255.0) / 255.0
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes)(nn.relu(nn.Dense(self.hidden)(x)))


def train_mlp(seed: int, x: np.ndarray, y: np.ndarray, steps: int = 200):
    model = MLP()
    xf = jnp.asarray(x, jnp.float32) / 255.0
    variables = model.init(jax.random.key(seed), xf[:1])
    opt = optax.adam(1e-2)
    state = opt.init(variables)

    @jax.jit
    def step(v, s):
        def loss(v):
            return optax.softmax_cross_entropy_with_integer_labels(model.apply(v, xf), y).mean()
        g = jax.grad(loss)(v)
        u, s = opt.update(g, s)
        return optax.apply_updates(v, u), s

    for _ in range(steps):
        variables, state = step(variables, state)
    return variables


@pytest.fixture(scope="module")
def models():
    x_train, y_train = make_data(512, 0)
    x_test, y_test = make_data(256, 1)
    v = train_mlp(0, x_train, y_train)
    surrogate = Classifier(MLP(), train_mlp(1, x_train, y_train))
    return dict(normal=Classifier(MLP(), v), surrogate=surrogate,
                masked=Classifier(MLP(quantise=True), v), x=x_test[:200], y=y_test[:200],
                x256=x_test, y256=y_test)


@pytest.fixture(scope="module")
def normal_record(models):
    return evaluate_classifier(models["normal"], models["x"], models["y"], eps=EPS,
                               batch_size=BATCH, surrogate=models["surrogate"],
                               eps_sweep="0.03,0.05", progress=False, return_per_example=True)


# ------------------------------------------------------------------ accuracy and combination


def test_accuracy_matches_bruteforce_loop(models, normal_record):
    clf, x, y = models["normal"], models["x"], models["y"]
    per_ex = normal_record["per_example"]

    @jax.jit
    @jax.grad
    def grad_ce(xi, yi):
        return optax.softmax_cross_entropy_with_integer_labels(clf.logits(xi), yi).sum()

    clean, fgsm = [], []
    for i in range(len(y)):
        xi = x[i:i + 1].astype(np.float32) / 255.0
        clean.append(int(np.argmax(np.asarray(clf.logits(xi))[0])) == y[i])
        g = np.asarray(grad_ce(jnp.asarray(xi), jnp.asarray(y[i:i + 1])))
        x_adv = np.clip(xi + EPS * np.sign(g), 0.0, 1.0)
        fgsm.append(int(np.argmax(np.asarray(clf.logits(x_adv))[0])) == y[i])
    np.testing.assert_array_equal(per_ex["clean"], clean)
    np.testing.assert_array_equal(per_ex["fgsm"], fgsm)
    assert normal_record["clean"] == dict(accuracy=np.mean(clean), correct=sum(clean), n=len(y))
    assert normal_record["white_box"]["fgsm"]["correct"] == sum(fgsm)
    for name in ("pgd10", "pgd20", "cw"):
        assert normal_record["white_box"][name]["correct"] == int(per_ex[name].sum())


def test_worst_case_per_example(normal_record):
    per_ex = normal_record["per_example"]
    names = ["clean", "fgsm", "pgd10", "pgd20", "cw"]
    expected = sum(all(per_ex[k][i] for k in names) for i in range(len(per_ex["clean"])))
    assert normal_record["worst_case"]["correct"] == expected
    # the worst case is strictly informative here: below every single attack
    assert expected < min(normal_record["white_box"][k]["correct"] for k in names[1:])
    r = normal_record["restart"]
    first, second = per_ex["pgd10"], per_ex["pgd10_restart"]
    assert r["worst"]["correct"] == sum(a and b for a, b in zip(first, second))


def test_worst_case_function():
    rng = np.random.default_rng(0)
    arrays = [rng.random(50) > 0.3 for _ in range(3)]
    loop = [all(a[i] for a in arrays) for i in range(50)]
    np.testing.assert_array_equal(worst_case(arrays), loop)
    with pytest.raises(ValueError):
        worst_case([])


def test_padded_last_batch_matches_unpadded(models):
    spec = attack_spec("pgd10")
    padded = Suite(models["normal"], models["x"], models["y"], batch_size=BATCH, progress=False)
    full = Suite(models["normal"], models["x256"], models["y256"], batch_size=BATCH,
                 progress=False)
    assert len(models["y"]) % BATCH != 0 and len(models["y256"]) % BATCH == 0
    a, b = padded.attack(spec, EPS), full.attack(spec, EPS)
    for k in ("pred", "fosc", "loss", "num_steps", "correct"):
        assert len(a[k]) == len(models["y"])
        np.testing.assert_array_equal(a[k], b[k][:len(models["y"])])
    np.testing.assert_array_equal(padded.predict(), full.predict()[:len(models["y"])])


def test_defaults_come_from_config(models):
    config = base_config()
    config.attack.eps = EPS
    config.eval.batch_size = 48
    config.defense.name = "standard"
    clf = Classifier(models["normal"].model, models["normal"].variables, config=config, epoch=3)
    rec = evaluate_classifier(clf, models["x"][:40], models["y"][:40], attacks=["FGSM"],
                              honesty=False, progress=False)
    assert rec["eps"] == EPS and rec["batch_size"] == 40 and rec["epoch"] == 3
    assert rec["label"] == "Standard" and rec["attacks"]["fgsm"]["step_size"] == EPS
    assert rec["honesty"] is None and rec["restart"] is None


# ------------------------------------------------------------------ honesty, end to end


def test_normal_model_raises_no_warning(normal_record):
    rec = normal_record
    assert rec["clean"]["accuracy"] > 0.9
    assert 0.2 < rec["white_box"]["pgd10"]["accuracy"] < 0.9  # the checks are not vacuous
    assert rec["large_eps"]["accuracy"] < rec["class_share"]
    assert [p["eps"] for p in rec["eps_sweep"]] == [0.03, 0.05]
    assert rec["honesty"]["warnings"] == []


def test_gradient_masked_model_is_flagged(models):
    rec = evaluate_classifier(models["masked"], models["x"], models["y"], eps=EPS,
                              attacks=("fgsm", "pgd10"), batch_size=BATCH,
                              surrogate=models["surrogate"], progress=False)
    checks = {w["check"] for w in rec["honesty"]["warnings"]}
    assert {"large_eps", "black_box"} <= checks, rec["honesty"]["warnings"]
    assert rec["white_box"]["pgd10"]["accuracy"] > 0.9  # masked: attacks look harmless
    assert "WARNING" in markdown_table([rec])


# ------------------------------------------------------------------ honesty rules, unit


def _entry(acc: float, n: int = 1000) -> dict:
    k = int(round(acc * n))
    return dict(accuracy=k / n, correct=k, n=n)


def _record(**over) -> dict:
    rec = dict(eps=0.3, class_share=0.11, clean=_entry(0.99),
               white_box=dict(fgsm=_entry(0.95), pgd10=_entry(0.91), pgd20=_entry(0.90)),
               black_box=dict(attacks=dict(fgsm=_entry(0.97), pgd10=_entry(0.96))),
               eps_sweep=[dict(eps=0.1, **_entry(0.97)), dict(eps=0.2, **_entry(0.95))],
               restart=dict(first=_entry(0.91), second=_entry(0.905), worst=_entry(0.90)),
               large_eps=dict(eps=0.5, **_entry(0.0)))
    rec.update(over)
    return rec


def test_noise_tolerance_by_hand():
    a, b = _entry(0.9, 100), _entry(0.5, 400)
    pa, pb = 91 / 102, 201 / 402
    assert honesty.noise_tolerance(a, b, z=2.0) == pytest.approx(
        2.0 * np.sqrt(pa * (1 - pa) / 100 + pb * (1 - pb) / 400))
    assert honesty.smoothed_se(0, 10) > 0


def test_clean_record_passes_all_rules():
    assert honesty.run_checks(_record()) == []


@pytest.mark.parametrize("over, check", [
    (dict(large_eps=dict(eps=0.5, **_entry(0.2))), "large_eps"),
    (dict(eps_sweep=[dict(eps=0.1, **_entry(0.80)), dict(eps=0.2, **_entry(0.95))]),
     "eps_monotone"),
    (dict(white_box=dict(fgsm=_entry(0.95), pgd10=_entry(0.85), pgd20=_entry(0.92))),
     "more_steps"),
    (dict(restart=dict(first=_entry(0.91), second=_entry(0.70), worst=_entry(0.68))),
     "restart"),
    (dict(restart=dict(first=_entry(0.91), second=_entry(0.90), worst=_entry(0.85))),
     "restart"),
    (dict(black_box=dict(attacks=dict(pgd10=_entry(0.80)))), "black_box"),
    (dict(white_box=dict(fgsm=_entry(0.80), pgd10=_entry(0.91), pgd20=_entry(0.90))),
     "fgsm_vs_pgd"),
])
def test_each_rule_fires(over, check):
    warnings = honesty.run_checks(_record(**over))
    assert {w["check"] for w in warnings} == {check}, warnings


def test_rules_tolerate_noise():
    # differences of ~1 standard error are not flagged
    rec = _record(white_box=dict(fgsm=_entry(0.905), pgd10=_entry(0.91), pgd20=_entry(0.915)),
                  black_box=dict(attacks=dict(pgd10=_entry(0.905))),
                  restart=dict(first=_entry(0.91), second=_entry(0.915), worst=_entry(0.895)))
    assert honesty.run_checks(rec) == []
    with pytest.raises(ValueError):
        honesty.run_checks(rec, z=0)


# ------------------------------------------------------------------ multi-device


def test_sharded_evaluation_matches_single_device(tmp_path):
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {REPO!r}); sys.path.insert(0, {os.path.dirname(__file__)!r})
        import jax
        from test_evaluation import MLP, make_data
        from fosc_jax.classifier import Classifier
        from fosc_jax.evaluation import evaluate_classifier
        assert jax.device_count() == 2
        x, y = make_data(50, 3)
        clf = Classifier(MLP(), MLP().init(jax.random.key(0), x[:1] / 255.0))
        out = {{}}
        for d in (1, 2):
            r = evaluate_classifier(clf, x, y, eps=0.05, attacks=["pgd10"],
                                    batch_size=16 if d == 1 else 15,
                                    honesty=False, progress=False, num_devices=d,
                                    return_per_example=True)
            out[d] = dict(devices=r["num_devices"], batch=r["batch_size"],
                          pgd=r["per_example"]["pgd10"].tolist(),
                          clean=r["per_example"]["clean"].tolist())
        print(json.dumps(out))
    """)
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["1"]["devices"] == 1 and out["2"]["devices"] == 2
    assert out["1"]["batch"] == out["2"]["batch"] == 16  # 15 rounded up to the devices
    assert out["1"]["clean"] == out["2"]["clean"]
    assert out["1"]["pgd"] == out["2"]["pgd"] and len(out["2"]["pgd"]) == 50


# ------------------------------------------------------------------ inputs and parsing


def test_parse_eps_list():
    assert parse_eps_list("2/255, 4/255,0.1") == pytest.approx([2 / 255, 4 / 255, 0.1])
    assert parse_eps_list([0.3]) == [0.3]
    for bad in ("0", "abc", "2", "", "1/0"):
        with pytest.raises(ValueError):
            parse_eps_list(bad)


def test_eval_subset_indices_fixed_and_sorted():
    a, b = eval_subset_indices(100, 10, seed=0), eval_subset_indices(100, 10, seed=0)
    np.testing.assert_array_equal(a, b)
    assert len(set(a)) == 10 and np.all(np.diff(a) > 0)
    np.testing.assert_array_equal(eval_subset_indices(5, None), np.arange(5))
    np.testing.assert_array_equal(eval_subset_indices(5, 50), np.arange(5))


def test_attack_names():
    assert attack_spec("PGD-10").name == "pgd10" and attack_spec("cw-inf").name == "cw"
    assert attack_spec("pgd20", step_fraction=0.125).step_fraction == 0.125
    assert attack_spec("fgsm", step_fraction=0.125).step_fraction == 1.0  # FGSM: one eps step
    with pytest.raises(ValueError, match="unknown attack"):
        attack_spec("deepfool")


def test_input_validation(models):
    x, y = models["x"][:8], models["y"][:8]
    with pytest.raises(ValueError, match="NHWC"):
        check_inputs(x[:, :, :, 0], y)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check_inputs(x.astype(np.float32), y)  # 0..255 floats: not scaled
    with pytest.raises(ValueError, match="shape"):
        check_inputs(x, y[:-1])
    with pytest.raises(ValueError, match="integer"):
        check_inputs(x, y.astype(np.float32))
    with pytest.raises(ValueError, match="eps"):
        evaluate_classifier(models["normal"], x, y, progress=False)  # no config, no eps
    with pytest.raises(ValueError, match="repeated"):
        evaluate_classifier(models["normal"], x, y, eps=0.1, attacks=["pgd10", "PGD-10"])
    three = MLP(num_classes=3)
    other = Classifier(three, three.init(jax.random.key(0), x[:1] / 255.0))
    with pytest.raises(ValueError, match="surrogate"):
        evaluate_classifier(models["normal"], x, y, eps=0.1, surrogate=other, progress=False)


def test_cli_parser():
    sys.path.insert(0, REPO)
    import evaluate
    args = evaluate.build_parser().parse_args(
        ["--workdir", "a", "b", "--attacks", "fgsm,PGD-10", "--eps", "8/255",
         "--eps-sweep", "2/255,4/255"])
    assert args.workdir == ["a", "b"] and args.attacks == ["fgsm", "pgd10"]
    assert args.eps == pytest.approx(8 / 255) and len(args.eps_sweep) == 2
    with pytest.raises(SystemExit):
        evaluate.build_parser().parse_args(["--workdir", "a", "--attacks", "deepfool"])


# ------------------------------------------------------------------ tables


def test_tables_layout_and_round_trip(tmp_path, normal_record):
    a = dict(normal_record, defense="dynamic", name="mnist_dynamic", workdir="runs/a")
    b = dict(normal_record, defense="dynamic", name="mnist_dynamic_v2", workdir="runs/b")
    c = dict(normal_record, defense="standard", name="mnist_standard", black_box=None)
    assert row_labels([a, b, c]) == ["Dynamic (mnist_dynamic)", "Dynamic (mnist_dynamic_v2)",
                                     "Standard"]
    same = dict(b, name="mnist_dynamic")
    assert row_labels([a, same]) == ["Dynamic (mnist_dynamic) (a)", "Dynamic (mnist_dynamic) (b)"]
    assert row_labels([a, dict(a)]) == ["Dynamic (mnist_dynamic) (a) #1",
                                        "Dynamic (mnist_dynamic) (a) #2"]
    md = markdown_table([a, c])
    header = md.splitlines()[0]
    assert header.startswith("| defense | clean | FGSM | PGD-10 | PGD-20 | CW | BB FGSM")
    row = md.splitlines()[2].split(" | ")
    assert row[1] == f"{100 * a['clean']['accuracy']:.2f}"
    assert row[3] == f"{100 * a['white_box']['pgd10']['accuracy']:.2f}"
    assert "| - |" in md.splitlines()[3]  # Standard has no black-box entries
    lines = csv_table([a, c]).splitlines()
    assert lines[0].split(",")[6:10] == ["clean", "fgsm", "pgd10", "pgd20"]
    assert float(lines[1].split(",")[8]) == pytest.approx(100 * a["white_box"]["pgd10"]["accuracy"])
    paths = write_results(tmp_path / "eval", [a, c])
    assert sorted(os.path.basename(p) for p in paths.values()) == [
        "results.csv", "results.json", "results.md"]
    back = read_results(paths["json"])
    assert "per_example" not in back[0]
    assert back[0]["white_box"] == json.loads(json.dumps(a["white_box"]))
    assert read_results(tmp_path)[1]["defense"] == "standard"  # a run dir: DIR/eval/...
