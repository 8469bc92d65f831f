"""Evaluation side of issue 23: portable run files, atomic and resumable results, complete
exports, and one-line errors for bad evaluate.py flags (before any compute)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from fosc_jax import parallel, rundir
from fosc_jax.training import train_and_evaluate

import tiny_config
from test_data import write_mnist

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# An absolute path of some machine: a "files:/..." source, or a home/temp/work folder.
ABSOLUTE = re.compile(rb'files:/|(?<![\w.])/(?:work|home|Users|tmp|root|mnt|scratch|data)/')


def _evaluate_main():
    sys.path.insert(0, ROOT)
    import evaluate
    return evaluate.main


def _files_under(folder):
    for base, _, files in os.walk(folder):
        for f in files:
            yield os.path.join(base, f)


def test_committed_results_name_no_absolute_path():
    listed = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True,
                            text=True)
    if listed.returncode != 0 or not listed.stdout.strip():
        pytest.skip("not a git checkout with results/")
    bad = []
    for rel in listed.stdout.split():
        with open(os.path.join(ROOT, rel), "rb") as f:
            data = f.read()
        if rel.endswith((".npz", ".png")):  # binary: only text-like runs could name a path
            data = b"".join(re.findall(rb"[ -~]{8,}", data))
        if ABSOLUTE.search(data):
            bad.append(rel)
    assert not bad, f"committed files name an absolute path: {bad}"


# ------------------------------------------------------------------ a run trained on files:DIR


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny run trained on IDX files in a tmp folder, and its export; the data folder is
    then moved, so the recorded location (if any) is stale."""
    tmp = tmp_path_factory.mktemp("portable")
    data = tmp / "mnist_here"
    write_mnist(data, np.random.default_rng(0), n_train=64, n_test=24,
                gz=(False, False, False, False))
    config = tiny_config.get_config("standard")
    config.data.source = f"files:{data}"
    run, export = str(tmp / "run"), str(tmp / "export")
    train_and_evaluate(config, run, mesh=parallel.make_mesh(1))
    rundir.export_classifier(run, export)
    moved = tmp / "mnist_moved"
    os.rename(data, moved)
    return types.SimpleNamespace(tmp=tmp, old=str(data), data=str(moved), run=run,
                                 export=export, config=config)


def test_run_and_export_files_name_no_folder_of_this_machine(trained):
    for folder in (trained.run, trained.export):
        for path in _files_under(folder):
            with open(path, "rb") as f:
                text = f.read()
            assert trained.old.encode() not in text, path  # the data folder: nowhere
            if "checkpoints" not in os.path.relpath(path, folder).split(os.sep):
                # Orbax's commit_success.txt names its own folder; nothing else any folder
                assert str(trained.tmp).encode() not in text, path
    for folder in (trained.run, trained.export):
        assert rundir.load_config(folder).data.source == "files"
    assert rundir.load_classifier(trained.export).config.data.source == "files"  # no data read


def test_evaluate_a_moved_export_with_the_flag_or_the_variable(trained, capsys, monkeypatch):
    monkeypatch.delenv("FOSC_JAX_MNIST_DIR", raising=False)
    work = str(trained.tmp / "copy_for_eval")
    shutil.copytree(trained.export, work)
    argv = ["--workdir", work, "--attacks", "fgsm", "--no-honesty", "--quiet"]
    main = _evaluate_main()
    import evaluate
    with monkeypatch.context() as patch, pytest.raises(SystemExit) as exit_:
        patch.setattr(evaluate, "evaluate_workdirs", lambda *a, **k: pytest.fail("computed"))
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1
    assert "--data DIR" in err[0] and "FOSC_JAX_MNIST_DIR" in err[0]

    by_flag = _evaluate_main()(argv + ["--data", trained.data])
    assert f"wrote {work}/eval/results.{{json,csv,md}}" in capsys.readouterr().out
    monkeypatch.setenv("FOSC_JAX_MNIST_DIR", trained.data)
    by_env = _evaluate_main()(argv)
    # the 24 test images the test wrote, scored on each path
    assert by_flag[0]["clean"]["n"] == by_env[0]["clean"]["n"] == 24
    assert by_flag[0]["white_box"] == by_env[0]["white_box"]
    for path in _files_under(work):
        with open(path, "rb") as f:
            assert str(trained.tmp).encode() not in f.read(), path


def test_a_run_recorded_as_files_resumes_from_files_dir_elsewhere(trained):
    """config.json says "files"; the resume names the (moved) folder and trains on."""
    config = tiny_config.get_config("standard")
    config.num_epochs = 2
    config.data.source = f"files:{trained.data}"
    run = str(trained.tmp / "resumed_run")
    shutil.copytree(trained.run, run)
    train_and_evaluate(config, run, mesh=parallel.make_mesh(1))
    assert [r["epoch"] for r in rundir.read_metrics(run)] == [1, 2]
    assert rundir.load_config(run).data.source == "files"
    with open(os.path.join(run, "data_sizes.json")) as f:
        sizes = json.load(f)       # (plus the splits' SHA-256 fingerprints, no path)
    assert {k: sizes[k] for k in ("source", "train_examples", "test_examples")} == {
        "source": "files", "train_examples": 64, "test_examples": 24}
    assert not any(str(trained.tmp) in str(v) for v in sizes.values())


# ------------------------------------------------------------------ kill -9 and resume


def _evaluate_cmd(workdir, data, *extra):
    return [sys.executable, os.path.join(ROOT, "evaluate.py"), "--workdir", workdir, "--data",
            data, "--attacks", "fgsm,pgd10,cw", "--no-honesty", "--quiet", *extra]


def _record(workdir):
    with open(os.path.join(workdir, "eval", "results.json")) as f:
        rec = json.load(f)["runs"][0]
    for key in ("seconds", "resumed", "workdir", "run"):  # the folder names differ
        rec.pop(key)
    return rec


def test_killed_evaluation_resumes_after_its_finished_attacks(trained):
    env = dict(os.environ, PYTHONPATH=ROOT)
    killed = str(trained.tmp / "killed")
    shutil.copytree(trained.export, killed)
    proc = subprocess.Popen(_evaluate_cmd(killed, trained.data), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = os.path.join(killed, "eval", "partial", "fgsm.json")
    deadline = time.time() + 300
    while not os.path.exists(first) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert os.path.exists(first), "the first attack's partial record never appeared"
    assert not os.path.exists(os.path.join(killed, "eval", "results.json")), \
        "killed too late: the evaluation had finished"

    rerun = subprocess.run(_evaluate_cmd(killed, trained.data), env=env, capture_output=True,
                           text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "fgsm: reused from" in rerun.stdout
    with open(os.path.join(killed, "eval", "results.json")) as f:
        resumed = json.load(f)["runs"][0]["resumed"]
    assert "fgsm" in resumed and "cw" not in resumed  # cw had not started when killed
    assert not os.path.exists(os.path.join(killed, "eval", "partial"))  # cleared when done

    fresh = str(trained.tmp / "uninterrupted")
    shutil.copytree(trained.export, fresh)
    done = subprocess.run(_evaluate_cmd(fresh, trained.data), env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _record(killed) == _record(fresh)



def test_partial_record_with_other_settings_is_not_reused(tmp_path):
    from fosc_jax.evaluation.resume import PartialRecords
    folder, lines = str(tmp_path / "partial"), []
    calls = []

    def compute(value):
        calls.append(value)
        return np.array([value, True]), None

    a = PartialRecords(folder, dict(seed=0), log=lines.append)
    np.testing.assert_array_equal(a.run("pgd10", dict(eps=0.3), lambda: compute(False))[0],
                                  [False, True])
    b = PartialRecords(folder, dict(seed=0), log=lines.append)  # same: reused, not computed
    np.testing.assert_array_equal(b.run("pgd10", dict(eps=0.3), lambda: compute(True))[0],
                                  [False, True])
    assert calls == [False] and b.resumed == ["pgd10"]
    c = PartialRecords(folder, dict(seed=1), log=lines.append)  # another seed: recomputed
    np.testing.assert_array_equal(c.run("pgd10", dict(eps=0.3), lambda: compute(True))[0],
                                  [True, True])
    d = PartialRecords(folder, dict(seed=1), log=lines.append)  # another eps: recomputed
    d.run("pgd10", dict(eps=0.1), lambda: compute(True))
    assert calls == [False, True, True] and c.resumed == d.resumed == []
    assert "seed: 0 -> 1" in lines[-2] and "eps: 0.3 -> 0.1" in lines[-1]


# ------------------------------------------------------------------ atomic results, exports


def test_results_files_are_replaced_atomically_json_last(tmp_path, monkeypatch):
    from fosc_jax.evaluation import tables
    from fosc_jax.rundir import integrity
    entry = dict(accuracy=0.5, correct=1, n=2)
    old = dict(defense="standard", name="a", eps=0.3, clean=entry, white_box=dict(fgsm=entry))
    out = str(tmp_path / "eval")
    tables.write_results(out, [old])
    before = {e: open(os.path.join(out, f"results.{e}")).read() for e in ("json", "csv", "md")}
    order = []
    real = integrity.atomic_write

    def full_disk(path, write, binary=False):  # the disk fills up while the json is written
        order.append(os.path.basename(path))
        if path.endswith(".json"):
            def partial(f):
                f.write("{")
                raise OSError(28, "No space left on device")
            return real(path, partial, binary)
        return real(path, write, binary)

    monkeypatch.setattr(integrity, "atomic_write", full_disk)
    with pytest.raises(OSError):
        tables.write_results(out, [dict(old, eps=0.1)])
    assert order == ["results.csv", "results.md", "results.json"]
    assert open(os.path.join(out, "results.json")).read() == before["json"]
    assert tables.read_results(out + "/results.json")[0]["eps"] == 0.3
    assert sorted(os.listdir(out)) == ["results.csv", "results.json", "results.md"]


def test_interrupted_export_is_incomplete_and_exported_again(tmp_path, monkeypatch):
    from fosc_jax.errors import RunFileError
    from fosc_jax.reproduce import pipeline
    target = tmp_path / "models" / "r"
    target.mkdir(parents=True)
    np.savez(target / rundir.EXPORT_FILE, w=np.zeros(2))  # an old export killed after npz
    assert not rundir.export_complete(str(target))
    with pytest.raises(RunFileError, match="unfinished export"):
        rundir.load_classifier(str(target))
    exported = []
    monkeypatch.setattr(pipeline, "run_config",
                        lambda *a: types.SimpleNamespace(num_epochs=1))
    monkeypatch.setattr(pipeline, "epochs_done", lambda w: 1)
    monkeypatch.setattr(pipeline.rundir, "export_classifier",
                        lambda src, dst: exported.append(dst))
    run = types.SimpleNamespace(name="r")
    pipeline.export_all([run], None, str(tmp_path), log=lambda m: None)
    assert exported == [str(target)]
    for name in (rundir.CONFIG_FILE, "model.json"):
        (target / name).write_text("{}")
    pipeline.export_all([run], None, str(tmp_path), log=lambda m: None)
    assert exported == [str(target)]  # complete now: skipped


def test_export_writes_variables_last(trained, monkeypatch):
    from fosc_jax.rundir import integrity
    real = integrity.atomic_write

    def killed_at_npz(path, write, binary=False):
        if path.endswith(rundir.EXPORT_FILE):
            raise KeyboardInterrupt  # the process dies here
        return real(path, write, binary)

    monkeypatch.setattr(integrity, "atomic_write", killed_at_npz)
    out = str(trained.tmp / "export_killed")
    with pytest.raises(KeyboardInterrupt):
        rundir.export_classifier(trained.run, out)
    assert not rundir.export_complete(out)
    assert sorted(os.listdir(out)) == [rundir.CONFIG_FILE, "model.json"]
    again = str(trained.tmp / "export_again")  # over a finished export: unfinished again
    shutil.copytree(trained.export, again)
    with pytest.raises(KeyboardInterrupt):
        rundir.export_classifier(trained.run, again)
    assert not rundir.export_complete(again)


# ------------------------------------------------------------------ bad input: one line


def _one_line_error(capsys, main, argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.parametrize("flags, says", [
    (["--num-examples", "0"], "--num-examples"), (["--num-examples", "-5"], "--num-examples"),
    (["--batch-size", "-3"], "--batch-size"), (["--batch-size", "0"], "--batch-size"),
    (["--step-fraction", "nan"], "--step-fraction"),
    (["--attacks", "fgsm,fgsm"], "named twice"), (["--attacks", ""], "no attack named"),
    (["--attacks", "deepfool"], "apgd-ce, apgd-dlr, apgd-t, fab-t, square, autoattack"),
    (["--restart-margin", "nan"], "--restart-margin"), (["--large-eps", "-1"], "--large-eps"),
    (["--out", "FILE"], "is a file"), (["--out", "FILE/sub"], "cannot be created"),
    (["--out", "/proc/fosc_jax_out"], "not writable"),
])
def test_bad_evaluate_flags_give_one_line_before_compute(tmp_path, capsys, monkeypatch,
                                                         flags, says):
    main = _evaluate_main()
    import evaluate
    monkeypatch.setattr(evaluate, "evaluate_workdirs", lambda *a, **k: pytest.fail("computed"))
    (tmp_path / "FILE").write_text("x")
    run = tmp_path / "run"
    run.mkdir()
    flags = [str(tmp_path / f) if f.startswith("FILE") else f for f in flags]
    assert says in _one_line_error(capsys, main, ["--workdir", str(run), *flags])


def test_read_only_workdir_is_refused_before_compute(tmp_path, capsys, monkeypatch):
    import evaluate
    main = _evaluate_main()
    monkeypatch.setattr(evaluate, "evaluate_workdirs", lambda *a, **k: pytest.fail("computed"))
    if os.geteuid() == 0:  # root writes through file modes: use a folder nobody can write
        run = "/proc/self"
    else:
        run = str(tmp_path / "run")
        os.makedirs(run)
        os.chmod(run, 0o555)
    assert "not writable" in _one_line_error(capsys, main, ["--workdir", run])


@pytest.mark.parametrize("content", ["pickle", "garbage"])
def test_damaged_or_pickled_variables_give_one_line(trained, tmp_path, capsys, content):
    export = str(tmp_path / "export")
    shutil.copytree(trained.export, export)
    path = os.path.join(export, rundir.EXPORT_FILE)
    if content == "pickle":  # an object array: loading it would unpickle
        np.savez(path, **{"params/x": np.array([{"a": 1}], dtype=object)})
    else:
        with open(path, "r+b") as f:
            f.seek(30)
            f.write(b"\xff" * 64)
    err = _one_line_error(capsys, _evaluate_main(),
                          ["--workdir", export, "--data", trained.data, "--quiet"])
    assert f"{path} is damaged or not plain arrays" in err


def test_report_refuses_to_write_into_a_folder_that_is_not_a_run(tmp_path, capsys):
    from fosc_jax.reporting import cli
    folder = tmp_path / "not_a_run"
    folder.mkdir()
    err = _one_line_error(capsys, cli.main, ["--workdir", str(folder), "--no-attack"])
    assert "is not a run directory" in err and os.listdir(folder) == []


def test_report_draws_figure1_of_a_moved_run_with_data_or_says_what_to_pass(trained,
                                                                            monkeypatch):
    from fosc_jax.reporting import cli
    monkeypatch.delenv("FOSC_JAX_MNIST_DIR", raising=False)
    out = str(trained.tmp / "report_without_data")
    cli.main(["--workdir", trained.export, "--out", out, "--num-examples", "8", "--quiet"])
    index = open(os.path.join(out, "index.md")).read()
    assert not any(f.startswith("fig1a_") for f in os.listdir(out))
    assert "FOSC_JAX_MNIST_DIR" in index  # Figure 1 skipped, saying what to pass
    out = str(trained.tmp / "report_with_data")
    made = cli.main(["--workdir", trained.export, "--out", out, "--num-examples", "8",
                     "--quiet", "--data", trained.data])
    assert any(os.path.basename(p).startswith("fig1a_") for p in made)


def test_autoattack_and_honesty_passes_are_resumed_with_the_same_record(tmp_path):
    """Every kind of saved attack (a suite attack, an AutoAttack name with its cascade
    report, the restart and large-eps passes) comes back equal from its partial record."""
    import flax.linen as nn
    import jax
    from fosc_jax.classifier import Classifier
    from fosc_jax.evaluation.api import evaluate_classifier

    class Linear(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            return nn.Dense(5)(x.reshape(x.shape[0], -1))

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 4, 4, 1), dtype=np.uint8)
    y = rng.integers(0, 5, 12).astype(np.int32)
    clf = Classifier(Linear(), Linear().init(jax.random.key(0), x[:1] / 255.0))
    kwargs = dict(eps=0.05, attacks=["fgsm", "autoattack"], autoattack_budget="cpu",
                  batch_size=4, progress=False, resume_dir=str(tmp_path / "partial"))
    first = evaluate_classifier(clf, x, y, **kwargs)
    again = evaluate_classifier(clf, x, y, **kwargs)
    assert first["resumed"] == [] and again["resumed"] == [
        "fgsm", "autoattack", "pgd10", "pgd10_restart", "large_eps"]
    for rec in (first, again):
        rec.pop("resumed")
        rec["seconds"] = None
        rec["autoattack"] = json.loads(json.dumps(rec["autoattack"]))  # tuples -> lists
    assert again == first
