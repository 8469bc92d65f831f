"""Issue 23, the run directory: no start ever replaces a run's history, a resume checks the
data's content, readers survive a checkpoint rotation, crash leftovers are cleaned, and bad
input to train.py gets one line before anything is created. Checks compare with facts
outside the code: bytes changed on disk, files listed by the OS, TensorBoard's own reader,
other processes' exit status."""
import json
import logging
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from fosc_jax import parallel, rundir
from fosc_jax.config import MAX_ATTACK_STEPS
from fosc_jax.errors import CheckpointError, ConfigError, DataError, RunFileError, RunHistoryError
from fosc_jax.training import train_and_evaluate

import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "tiny_config.py")
BUNDLED = os.path.join(ROOT, "fosc_jax", "data", "mnist_subset.npz")


def _config(**changes):
    c = tiny_config.get_config("standard", epochs=2)  # bundled data, 4 steps per epoch
    c.checkpoint_keep = 2
    for k, v in changes.items():
        c[k] = v
    return c


def _train(workdir, config=None, **kwargs):
    return train_and_evaluate(config or _config(), str(workdir), mesh=parallel.make_mesh(1),
                              **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-epoch run with checkpoints at steps 4 and 8."""
    workdir = tmp_path_factory.mktemp("trained") / "run"
    _train(workdir)
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "8"]
    return workdir


def _copy(trained, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(trained, dest)
    return dest


def _flip_largest_file(step_dir):
    files = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs]
    path = max(files, key=os.path.getsize)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    return path


def _params(clf):
    import jax
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(clf.variables["params"])]


# ------------------------------------------------------------ history is never replaced


def test_run_without_usable_checkpoint_is_refused_and_restart_moves_it_aside(
        trained, tmp_path, capfd, caplog):
    workdir = _copy(trained, tmp_path)
    metrics_before = (workdir / "metrics.jsonl").read_bytes()
    _flip_largest_file(workdir / "checkpoints" / "4")
    (workdir / "checkpoints" / "8" / "_CHECKPOINT_METADATA").write_text("{")  # Orbax's JSON
    with pytest.raises(CheckpointError) as err:  # the first run quarantines both
        _train(workdir)
    assert len(str(err.value)) < 300 and "--restart" in str(err.value)
    assert sorted(n.split("-")[0] for n in os.listdir(workdir / "corrupt_checkpoints")) == [
        "4", "8"]
    # Expected failures are reported by our warnings only, not Orbax's ERROR:absl lines.
    assert [r.getMessage()[:80] for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert "checkpoints/8 is unusable" in capfd.readouterr().err

    with pytest.raises(RunHistoryError, match=r"holds a run \(2 metrics.jsonl rows, 2 FOSC "
                                              r"samples in fosc/, 2 checkpoints in "
                                              r"corrupt_checkpoints/\) but no usable"):
        _train(workdir)  # a scheduler's plain retry: refused, not trained from scratch
    assert (workdir / "metrics.jsonl").read_bytes() == metrics_before
    assert os.listdir(workdir / "checkpoints") == []

    row = _train(workdir, _config(stop_after_epochs=1), restart=True)
    assert row["epoch"] == 1
    assert "--restart: moved the previous run to" in capfd.readouterr().out
    aside = [p for p in os.listdir(tmp_path) if p.startswith("run.replaced-")]
    assert len(aside) == 1
    old = tmp_path / aside[0]
    assert (old / "metrics.jsonl").read_bytes() == metrics_before  # nothing deleted
    assert len(os.listdir(old / "corrupt_checkpoints")) == 2
    assert [r["epoch"] for r in rundir.read_metrics(workdir)] == [1]
    assert not os.path.exists(workdir / "corrupt_checkpoints")


# -------------------------------------------------- a resume on other data is refused


def test_resume_on_same_size_other_data_is_refused(trained, tmp_path):
    workdir = _copy(trained, tmp_path)
    record = json.loads((workdir / "data_sizes.json").read_text())
    with np.load(BUNDLED, allow_pickle=False) as d:
        arrays = {k: d[k] for k in d.files}
    same, other = tmp_path / "same", tmp_path / "other"
    same.mkdir(), other.mkdir()
    np.savez(same / "mnist.npz", **arrays)
    # Every image one grey level off (the training subset is seeded): same sizes, other data.
    np.savez(other / "mnist.npz", **{**arrays, "x_train": arrays["x_train"] ^ 1})
    moved = _config()
    moved.data.source = f"files:{other}"
    with pytest.raises(ConfigError, match=r"other train data than .* \(same sizes, other "
                                          r"SHA-256 recorded in data_sizes.json"):
        _train(workdir, moved)
    moved.data.source = f"files:{same}"  # the same data elsewhere still resumes
    assert _train(workdir, moved) == {}

    # A run from before fingerprints were recorded (the committed results) keeps resuming.
    del record["train_sha256"], record["test_sha256"]
    (workdir / "data_sizes.json").write_text(json.dumps(record))
    moved.data.source = f"files:{other}"
    assert _train(workdir, moved) == {}


# ------------------------------------------------------------- checkpoint rotation race


def test_reader_during_rotation_reads_the_new_checkpoint(trained, tmp_path, capfd):
    workdir = _copy(trained, tmp_path)
    newest = tmp_path / "8"
    shutil.move(workdir / "checkpoints" / "8", newest)
    config = rundir.load_config(str(workdir))
    manager = rundir.checkpoints.make_manager(str(workdir), config, read_only=True)
    try:
        assert manager.all_steps() == [4]  # the reader listed the steps ...
        shutil.move(newest, workdir / "checkpoints" / "8")  # ... the writer finalised 8
        _flip_largest_file(workdir / "checkpoints" / "4")  # and is deleting 4
        os.remove(os.path.join(workdir, "checkpoints", "4", "_CHECKPOINT_METADATA"))
        from fosc_jax.rundir.export import _whole_tree_target
        capfd.readouterr()
        state, step = rundir.checkpoints.restore_newest_good(manager, _whole_tree_target)
    finally:
        manager.close()
    assert step == 8 and int(state["step"]) == 8
    assert "unusable" not in capfd.readouterr().err  # no corruption reported


# ----------------------------------------------- resume: leftovers, TensorBoard replays


def test_resume_cleans_stale_temp_files_and_tensorboard_shows_each_epoch_once(trained,
                                                                             tmp_path):
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    workdir = _copy(trained, tmp_path)
    shutil.rmtree(workdir / "checkpoints" / "8")  # killed after epoch 2's rows, before its save
    old = time.time() - 3600
    stale = [workdir / ".tmp_abc.jsonl", workdir / "fosc" / ".tmp_def.npz"]
    keep = [workdir / ".tmp_young.json", workdir / "eval.tmp_x", workdir / "checkpoints" /
            ".tmp_orbax"]
    for path in stale + keep:
        path.write_text("x")
    for path in stale + keep[1:]:
        os.utime(path, (old, old))
    time.sleep(1.1)  # the resumed run's event file gets another name (one per second)
    row = _train(workdir)
    assert row["epoch"] == 2 and row["resumed_mid_epoch"] is False
    assert [p.exists() for p in stale + keep] == [False, False, True, True, True]

    acc = ea.EventAccumulator(str(workdir), size_guidance={ea.SCALARS: 0},
                              purge_orphaned_data=False)
    acc.Reload()
    events = acc.Scalars("train_loss")
    assert [e.step for e in events] == [1, 2]  # epoch 2 once, not once per run
    assert events[1].value == pytest.approx(row["train_loss"], rel=1e-6)
    assert len([n for n in os.listdir(workdir) if n.startswith("events.out.tfevents")]) == 2


def test_per_epoch_test_shows_progress_unless_quiet(trained, tmp_path, capfd):
    workdir = _copy(trained, tmp_path)
    capfd.readouterr()
    _train(workdir, _config(num_epochs=3, quiet=False))
    err = capfd.readouterr().err
    assert "clean" in err and "PGD-10 eps=0.3" in err  # the test's batches, epoch 3
    _train(workdir, _config(num_epochs=4, quiet=True))
    assert "PGD-10" not in capfd.readouterr().err


# ----------------------------------------------------- bad input: one line, nothing made


def _cli(args, env=None):
    return subprocess.run([sys.executable, "train.py"] + args, capture_output=True, text=True,
                          timeout=180, cwd=ROOT, env=env)


def _errors(stderr):
    return [ln for ln in stderr.splitlines() if ln.strip() and ln[:1] not in "WI"]


@pytest.mark.parametrize("args, expected", [
    (["--epochs", "0"], "error: --epochs = 0 is invalid: must be >= 1"),
    (["--config.attack.step_size=inf"], "error: config.attack.step_size = inf is invalid"),
    (["--config.optim.lr_drop_epochs=(-1,)"], "error: config.optim.lr_drop_epochs = (-1,) is "
                                              "invalid"),
    ([f"--config.attack.num_steps={MAX_ATTACK_STEPS * 100}"],
     f"error: config.attack.num_steps = {MAX_ATTACK_STEPS * 100} is invalid: must be an "
     f"integer in [1, {MAX_ATTACK_STEPS}]"),
    (["--config", "no/such/config.py"], "error: --config no/such/config.py: the config file "
                                        "cannot be loaded"),
])
def test_train_cli_bad_input_gives_one_line_before_anything(args, expected, tmp_path):
    workdir = tmp_path / "run"
    config = [] if "--config" in args else ["--config", TINY]
    proc = _cli(config + args + ["--workdir", str(workdir)])
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = _errors(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert len(lines[0]) < 300
    assert "training" not in proc.stdout and not workdir.exists()


def test_workdir_that_is_a_file_and_garbled_metrics_row_give_one_line(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("notes")
    proc = _cli(["--config", TINY, "--workdir", str(afile)])
    assert proc.returncode == 2 and _errors(proc.stderr) == [
        f"error: --workdir {afile} is a file, not a folder; pass a folder path (it is created "
        "if missing)."]
    assert afile.read_text() == "notes"

    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 1.0}\n{"epoch": 2, "tr\n'
                                       '{"epoch": 3}\n')
    with pytest.raises(RunFileError, match=rf"{run}/metrics.jsonl:2: not JSON .*fix or delete "
                                           "row 2"):
        _train(run)
    assert sorted(os.listdir(run)) == ["metrics.jsonl"]  # checked before the lock, before compute


def test_failed_data_load_creates_no_workdir(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "mnist.npz").write_bytes(b"PK\x03\x04 not a zip archive")
    config = _config()
    config.data.source = f"files:{folder}"
    with pytest.raises(DataError):
        _train(tmp_path / "run", config)
    assert not (tmp_path / "run").exists()  # no folder holding only .lock


# ------------------------------------------------------------ multi-process launches


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("what", ["config", "workdir"])
def test_processes_launched_with_different_settings_fail_in_one_line(what, tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
           "FOSC_JAX_COORDINATOR": f"127.0.0.1:{_free_port()}", "FOSC_JAX_NUM_PROCESSES": "2"}
    procs = []
    for i in range(2):
        args = ["--config", TINY, "--workdir", str(tmp_path / "run")]
        if i == 1:
            args += ["--config.attack.eps=0.2"] if what == "config" else [
                "--workdir", str(tmp_path / "other")]
        procs.append(subprocess.Popen([sys.executable, "train.py"] + args, cwd=ROOT,
                                      env={**env, "FOSC_JAX_PROCESS_ID": str(i)},
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=150) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for i, (p, (_, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 2, f"process {i}: {err[-2000:]}"
        lines = _errors(err)
        assert len(lines) == 1 and lines[0].startswith(
            f"error: multi-process launch: process(es) [1] got another {what} than process 0 "
            f"(this is process {i})"), lines
    assert not (tmp_path / "run").exists() and not (tmp_path / "other").exists()
