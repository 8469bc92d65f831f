"""The CIFAR-10 reproduction (python -m fosc_jax.reproduce cifar): its configs against the
paper's table in docs/method.md, the compressed schedules, the command's errors, the ResNet-50
surrogate at 32x32, the JPEG-copy detection, and the command end to end at the smoke scale."""
import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_configs import ROOT, expected_from_table, flat, paper_table

from fosc_jax.data import load_dataset
from fosc_jax.data.dataset import Dataset
from fosc_jax.reproduce import __main__ as cli
from fosc_jax.reproduce import data_id, readme
from fosc_jax.reproduce.experiments import CIFAR, EXPERIMENTS, MNIST, run_config

CIFAR_DIR = os.environ.get("FOSC_JAX_CIFAR10_DIR")
DEFENSES = ("unsecured", "standard", "curriculum", "dynamic")
METRICS = ("clean", "fgsm", "pgd10", "pgd20", "cw")


def paper_accuracies() -> dict:
    """{column: {defense: {metric: %}}} of docs/method.md's table of the paper's white-box
    accuracies (the source the experiments' numbers were transcribed from)."""
    with open(os.path.join(ROOT, "docs", "method.md")) as f:
        section = f.read().split("The paper's white-box accuracies (%)", 1)[1]
    lines = section.strip().split("\n\n")[1].splitlines()
    columns = [c.strip() for c in lines[0].strip("|").split("|")][1:]
    table = {c: {} for c in columns}
    for line in lines[2:]:
        label, *cells = [c.strip() for c in line.strip("|").split("|")]
        for column, cell in zip(columns, cells):
            values = [float(v) for v in cell.split("/")]
            table[column][label.lower()] = dict(zip(METRICS, values))
    return table


def test_the_experiments_carry_the_papers_numbers_of_docs_method():
    table = paper_accuracies()
    assert table["MNIST"] == {d: dict(v) for d, v in MNIST.paper_white.items()}
    assert table["CIFAR-10"] == {d: dict(v) for d, v in CIFAR.paper_white.items()}
    assert set(table["CIFAR-10"]) == set(DEFENSES)


def test_paper_scale_cifar_configs_are_docs_methods_table():
    expected = expected_from_table(paper_table(), "CIFAR-10")
    defenses = [r for r in CIFAR.runs if r.role == "defense"]
    assert sorted(r.defense for r in defenses) == sorted(DEFENSES)
    for run in defenses:
        got = flat(run_config(run, CIFAR.scales["paper"], "files:CIFAR"))
        for field, value in expected.items():
            assert got[field] == pytest.approx(value) if isinstance(value, float) else \
                got[field] == value, (run.name, field, got[field], value)
        assert got["data.train_limit"] == 0 and got["defense.name"] == run.defense  # all 50,000
    sur = flat(run_config(next(r for r in CIFAR.runs if r.role == "surrogate"),
                          CIFAR.scales["paper"], "files:CIFAR"))
    assert (sur["model.name"], sur["defense.name"], sur["optim.lr"], sur["optim.weight_decay"],
            sur["num_epochs"], sur["optim.lr_drop_epochs"], sur["data.augment"]) == \
        ("resnet50", "unsecured", 0.1, 5e-4, 120, (60, 100), "cifar")


@pytest.mark.parametrize("scale", ["cpu", "paper"])
def test_compressed_cifar_schedules_keep_the_papers_fractions(scale):
    """lr / 10 at 50% and 83.3% (60 and 100 of 120 epochs), T' at 83.3%, the same images and
    epochs for every defense; the surrogate at the same fractions of its own epochs."""
    s = CIFAR.scales[scale]
    for run in CIFAR.runs:
        epochs = s.surrogate_epochs if run.role == "surrogate" and s.surrogate_epochs \
            else s.epochs
        at = lambda fraction: max(1, round(fraction * epochs))  # noqa: E731
        c = run_config(run, s, "files:CIFAR")
        assert (c.num_epochs, c.data.train_limit) == (epochs, s.train_images or 0), run.name
        assert tuple(c.optim.lr_drop_epochs) == (at(0.5), at(100 / 120)), run.name
        assert c.defense.t_prime == at(100 / 120), run.name
        assert c.data.subset == "random"   # the JPEG copy is sorted by class
        assert (c.attack.eps, c.attack.num_steps, c.batch_size) == (8 / 255, 10, 128)


def test_cpu_scale_states_its_size():
    cpu = CIFAR.scales["cpu"]
    assert f"{cpu.train_images:,} training images x {cpu.epochs} epochs" in cpu.about
    assert "2-core CPU" in cpu.about and "s per" in cpu.about   # the measured epoch time
    assert cpu.test_images is not None and cpu.blackbox_images <= cpu.test_images


def test_resnet50_surrogate_suits_32x32_inputs():
    """A CIFAR ResNet: 3x3 stride-1 stem (no max-pool), 4x4 maps of 2048 channels before the
    global pool, 10 logits (shapes only, traced without computing)."""
    from fosc_jax.models import get_model
    model = get_model("resnet50")
    x = jnp.zeros((2, 32, 32, 3))
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    assert variables["params"]["Conv_0"]["kernel"].shape == (3, 3, 3, 64)
    logits, inter = jax.eval_shape(lambda v: model.apply(
        v, x, train=False, capture_intermediates=True, mutable=["intermediates"]), variables)
    assert logits.shape == (2, 10)
    blocks = sorted((k for k in inter["intermediates"] if k.startswith("Bottleneck_")),
                    key=lambda k: int(k.split("_")[1]))
    assert len(blocks) == 16
    assert inter["intermediates"][blocks[-1]]["__call__"][0].shape == (2, 4, 4, 2048)


@pytest.mark.parametrize("argv, what", [
    (["--runs", "standard_s0"], "--runs"),                 # an MNIST run name
    (["--stages", "train,section3"], "--stages"),          # an MNIST-only stage
    (["--stages", "convergence"], "--stages"),
    (["--data", "bundled"], "--data"),
    (["--data", "/no/such/folder"], "--data"),
])
def test_cifar_command_errors_are_one_line_before_any_work(argv, what, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["cifar", "--data", str(tmp_path), "--out", str(out)] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {what}:") and err.count("\n") == 1, err
    assert not out.exists()


def test_cifar_command_without_data_says_which_variable(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FOSC_JAX_CIFAR10_DIR", raising=False)
    assert cli.main(["cifar", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --data:") and "$FOSC_JAX_CIFAR10_DIR" in err
    assert err.count("\n") == 1 and not (tmp_path / "out").exists()


def _dataset(y_train, x_train=None) -> Dataset:
    n = len(y_train)
    x = np.zeros((n, 32, 32, 3), np.uint8) if x_train is None else x_train
    return Dataset("cifar10", x, np.asarray(y_train, np.int32), x[:4],
                   np.asarray(y_train[:4], np.int32), 10)


def test_copy_detection_reads_content_not_names():
    rng = np.random.default_rng(0)
    shuffled = _dataset(rng.permutation(np.repeat(np.arange(10), 3)))
    assert data_id.data_label("CIFAR-10", "cifar10", shuffled) == "CIFAR-10"
    assert data_id.data_label("CIFAR-10", "cifar10", _dataset(np.repeat(np.arange(10), 3))) \
        == "CIFAR-10 (class-sorted copy)"
    assert data_id.data_label("MNIST", "mnist", shuffled) == "MNIST"
    x = np.zeros((30, 32, 32, 3), np.uint8)
    before = data_id.content_sha256(_dataset(np.arange(30) % 10, x))
    x[7, 3, 3, 1] = 1
    assert data_id.content_sha256(_dataset(np.arange(30) % 10, x)) != before
    assert data_id.data_lines("MNIST", "mnist", shuffled) == []


def test_cifar_readme_markers_leave_the_mnist_table_alone(tmp_path):
    text = f"intro\n{readme.README_START}\nMNIST rows\n{readme.README_END}\nend\n"
    path = tmp_path / "README.md"
    path.write_text(text)
    assert readme.update_readme(str(path), "CIFAR rows", CIFAR.readme_markers) is False
    assert path.read_text() == text
    assert readme.update_readme(str(path), "new", MNIST.readme_markers) is True
    assert "new" in path.read_text() and "MNIST rows" not in path.read_text()
    assert set(EXPERIMENTS) == {"mnist", "cifar"}


@pytest.mark.skipif(not CIFAR_DIR, reason="set FOSC_JAX_CIFAR10_DIR to the decoded JPEG copy "
                                          "of CIFAR-10 (.ci/run does)")
def test_the_jpeg_copy_loads_whole_and_is_recognised():
    ds = load_dataset(f"files:{CIFAR_DIR}", "cifar10")
    assert ds.x_train.shape == (50_000, 32, 32, 3) and ds.x_test.shape == (10_000, 32, 32, 3)
    assert np.bincount(ds.y_train).tolist() == [5_000] * 10
    assert np.bincount(ds.y_test).tolist() == [1_000] * 10
    assert data_id.content_sha256(ds) == data_id.JPEG_COPY_SHA256
    assert data_id.data_label(CIFAR.title, CIFAR.dataset, ds) == "CIFAR-10 (JPEG copy)"


def _synthetic_cifar(path) -> None:
    """A CIFAR-shaped .npz: 160 training and 40 test images, labels shuffled."""
    rng = np.random.default_rng(0)
    y_train, y_test = rng.permutation(np.arange(160) % 10), rng.permutation(np.arange(40) % 10)
    # Class-dependent means so the models have something to learn.
    image = lambda y: np.clip(rng.normal(25 * y[:, None, None, None] + 20, 40,  # noqa: E731
                                         (len(y), 32, 32, 3)), 0, 255).astype(np.uint8)
    np.savez(path, x_train=image(y_train), y_train=y_train.astype(np.uint8),
             x_test=image(y_test), y_test=y_test.astype(np.uint8))


@pytest.mark.slow
def test_cifar_smoke_command_runs_every_stage_end_to_end(tmp_path, capsys):
    """Dynamic and the ResNet-50 surrogate (the other defenses share Dynamic's code paths)
    through train, export, eval (white-box, eps sweep, black-box), AutoAttack and report."""
    data = tmp_path / "cifar.npz"
    _synthetic_cifar(data)
    out = tmp_path / "repro"
    smoke = dataclasses.replace(CIFAR.scales["paper"], **CIFAR.smoke)
    assert cli.main(["cifar", "--scale", "paper", "--smoke", "--data", str(data), "--out",
                     str(out), "--runs", "dynamic,surrogate"]) == 0
    assert "first epoch took" in capsys.readouterr().out
    dyn = json.load(open(out / "eval" / "dynamic.json"))
    assert dyn["clean"]["n"] == smoke.test_images and dyn["eps"] == pytest.approx(8 / 255)
    assert set(dyn["white_box"]) == set(smoke.attacks)
    assert set(dyn["black_box"]["attacks"]) == set(smoke.attacks)
    assert all(e["n"] == smoke.blackbox_images for e in dyn["black_box"]["attacks"].values())
    assert dyn["black_box"]["name"] == "cifar_surrogate"
    assert [round(p["eps"] * 255, 6) for p in dyn["eps_sweep"]] == [2, 4, 6, 8, 10, 12]
    aa = json.load(open(out / "eval" / "autoattack" / "dynamic.json"))
    assert aa["clean"]["n"] == smoke.autoattack_images and aa["eps"] == pytest.approx(8 / 255)
    assert aa["autoattack"]["version"] == "cpu" and not aa["autoattack"]["standard"]
    assert aa["white_box"]["autoattack"]["accuracy"] <= aa["clean"]["accuracy"]
    assert not (out / "eval" / "autoattack" / "surrogate.json").exists()  # not a defense
    sur = json.load(open(out / "eval" / "surrogate.json"))
    assert sur["black_box"] is None and sur["white_box"] == {} and sur["clean"]["n"] == 16
    cfg = json.load(open(out / "models" / "surrogate" / "config.json"))
    assert (cfg["model"]["name"], cfg["defense"]["name"]) == ("resnet50", "unsecured")
    run = json.load(open(out / "runs" / "dynamic" / "config.json"))
    assert (run["num_epochs"], run["data"]["train_limit"], run["model"]["name"],
            run["attack"]["bn_mode"], run["data"]["augment"]) == (1, 128, "cifar_cnn", "train",
                                                                  "cifar")
    text = open(out / "RESULTS.md").read()
    assert text.startswith("# Reproduction: CIFAR-10, Table 1")      # not the JPEG copy
    assert '--smoke --data "$FOSC_JAX_CIFAR10_DIR"' in text
    paper = paper_accuracies()["CIFAR-10"]["dynamic"]
    for metric in ("clean", "fgsm"):
        assert f"({paper[metric]:.2f}; " in text, metric
    assert "## White-box accuracy (%), eps 8/255" in text and "## Black-box accuracy" in text
    assert "Section 3" not in text and "over seeds" not in text and "collapse" not in text
    assert "scored clean only, nothing to check: surrogate" in text
    assert "AutoAttack: not run yet" not in text and "| dynamic |" in text.split(
        "AutoAttack")[-1]
    assert os.path.getsize(out / "figures" / "eps_sweep.png") > 1000
    for root, _, files in os.walk(out):
        for name in files:
            if name.endswith((".md", ".json", ".jsonl")):
                body = open(os.path.join(root, name)).read()
                assert str(tmp_path) not in body and ROOT not in body, (root, name)
