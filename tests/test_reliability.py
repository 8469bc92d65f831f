"""Reliability (issue 11): nothing is lost, bad input gets one line before any compute, and
training runs as two processes. Every check compares against facts outside the code under
test: bytes flipped on disk, real signals, file modes set by the umask, a lock held by
another process, the numbers of a one-process run."""
import json
import math
import os
import signal
import socket
import subprocess
import sys
import types

import jax
import numpy as np
import optax
import pytest

from fosc_jax import parallel, rundir, training
from fosc_jax.config import ConfigError, base_config, validate_config
from fosc_jax.errors import (CheckpointError, DataError, NonFiniteError, RunFileError, UserError,
                             WorkdirLockedError)
from fosc_jax.training import train_and_evaluate
from fosc_jax.training import trainer as trainer_module
from fosc_jax.rundir.lock import WorkdirLock

import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "tests", "tiny_config.py")


def run_cli(args, timeout=180, env=None):
    return subprocess.run([sys.executable] + args, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def error_lines(stderr):
    """The stderr lines that are not library log noise (absl/Orbax 'W...'/'I...' lines)."""
    return [ln for ln in stderr.splitlines() if ln.strip() and ln[:1] not in "WI"]


# ------------------------------------------------------------------ validation, one line


@pytest.mark.parametrize("field, value, accepted", [
    ("attack.eps", 1.5, "<= 1"),
    ("checkpoint_every", 0, "[1, inf)"),
    ("checkpoint_keep", 0, ">= 1"),
    ("defense.c_max", math.nan, "finite"),
    ("optim.momentum", math.nan, "[0, 1]"),
    ("optim.weight_decay", math.nan, "finite"),
    ("optim.lr", math.inf, "(0, inf)"),
    ("data.train_limit", -5, "[0, inf)"),
    ("stop_after_epochs", -1, "[0, inf)"),
    ("fosc_sample_size", -1, "[0, inf)"),
    ("seed", -1, "[0, inf)"),
    ("optim.lr_drop_factor", -1.0, "(0, 1]"),
])
def test_bad_values_are_refused_before_any_compute(field, value, accepted):
    c = base_config()
    section, _, name = field.rpartition(".")
    (c[section] if section else c)[name] = value
    with pytest.raises(ConfigError) as err:
        validate_config(c, num_devices=1, check_data=False)
    message = str(err.value)
    assert f"config.{field} = {value!r}" in message and accepted in message
    assert "\n" not in message


def test_train_cli_unknown_field_and_garbled_config_json_give_one_line(tmp_path):
    proc = run_cli(["train.py", "--config", TINY, "--config.bogus=1",
                    "--workdir", str(tmp_path / "a")])
    assert proc.returncode == 2
    assert error_lines(proc.stderr) == [
        "error: --config.bogus=1: the config has no field 'bogus'; accepted fields are those "
        "of fosc_jax/config.py base_config()"]
    assert not os.path.exists(tmp_path / "a")
    garbled = tmp_path / "b"
    garbled.mkdir()
    (garbled / "config.json").write_text('{"seed": 0, "batch_')
    proc = run_cli(["train.py", "--config", TINY, "--workdir", str(garbled)])
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = error_lines(proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert f"{garbled}/config.json is not valid JSON" in lines[0]


def _evaluate_main():
    sys.path.insert(0, ROOT)
    import evaluate
    return evaluate.main


def test_evaluate_and_report_give_one_line_for_bad_run_files(tmp_path, capsys,
                                                                  monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("[1, 2")
    with pytest.raises(SystemExit) as exit_:
        _evaluate_main()(["--workdir", str(run), "--quiet"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {run}/config.json is not valid JSON")

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "mnist.npz").write_bytes(b"PK\x03\x04 a damaged zip archive")
    config = tiny_config.get_config()
    config.data.source = f"files:{folder}"
    (run / "config.json").write_text(config.to_json())
    from fosc_jax.evaluation import api  # a run with a model whose data file is damaged
    monkeypatch.setattr(api, "_load_classifier", lambda w: types.SimpleNamespace(config=config))
    with pytest.raises(SystemExit) as exit_:
        _evaluate_main()(["--workdir", str(run), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {run}: data.source = 'files:{folder}'")
    assert "not a readable .npz file" in err[0]

    from fosc_jax.reporting import cli
    (run / "metrics.jsonl").write_text('{"epoch": 0, "train_loss": 1.0}\n{"epoch": 1, "tr\n')
    with pytest.raises(SystemExit) as exit_:
        cli.main([str(run), "--out", str(tmp_path / "out"), "--no-attack", "--quiet"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {run}/metrics.jsonl:2: not JSON")


# ------------------------------------------------ late checks: nothing written before them


def test_failed_start_leaves_no_config_json(tmp_path):
    small = tiny_config.get_config()
    small.data.train_limit = 8  # fewer examples than batch_size 16
    with pytest.raises(ConfigError, match=r"config.batch_size = 16 is invalid: it exceeds the 8 "
                                          r"training examples"):
        train_and_evaluate(small, str(tmp_path / "small"), mesh=parallel.make_mesh(1))
    assert not os.path.exists(tmp_path / "small" / "config.json")

    mismatch = tiny_config.get_config()
    mismatch.data.name, mismatch.model.name = "cifar10", "cifar_cnn"  # bundled is MNIST only
    with pytest.raises(DataError, match=r"config.data.source = 'bundled' with data.name = "
                                        r"'cifar10' cannot be loaded: bundled source"):
        train_and_evaluate(mismatch, str(tmp_path / "mismatch"), mesh=parallel.make_mesh(1))
    assert not os.path.exists(tmp_path / "mismatch" / "config.json")

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "mnist.npz").write_bytes(b"PK\x03\x04 this is not a zip archive")
    bad_file = tiny_config.get_config()
    bad_file.data.source = f"files:{folder}"
    with pytest.raises(DataError, match=r"mnist.npz: not a readable .npz file"):
        train_and_evaluate(bad_file, str(tmp_path / "bad_file"), mesh=parallel.make_mesh(1))
    assert not os.path.exists(tmp_path / "bad_file" / "config.json")


# ------------------------------------------------------------- checkpoints: lose nothing


def _largest_file(folder):
    files = [os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs]
    return max(files, key=os.path.getsize)


def _flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))


def _params(clf):
    return jax.tree_util.tree_leaves(jax.device_get(clf.variables))


def test_corrupt_checkpoint_falls_back_and_run_files_keep_the_umask(tmp_path, capsys):
    workdir = str(tmp_path / "run")
    config = tiny_config.get_config("standard", epochs=2)  # bundled data, 4 steps per epoch
    old_mask = os.umask(0o027)
    try:
        train_and_evaluate(config, workdir, mesh=parallel.make_mesh(1))
    finally:
        os.umask(old_mask)
    for name in ("config.json", "metrics.jsonl", "data_sizes.json", "fosc/epoch_0001.npz"):
        assert os.stat(os.path.join(workdir, name)).st_mode & 0o777 == 0o640, name
    reference = _params(rundir.load_classifier(workdir))  # epoch 2, step 8

    # Flip single bytes of the newest checkpoint: in its largest (parameter) file, also near
    # the end (bytes the decoder never reads), and in Orbax's tree metadata. Each flip alone
    # must make that checkpoint fail to verify.
    step_dir = os.path.join(workdir, "checkpoints", "8")
    data_file = _largest_file(step_dir)
    for path, where in ((data_file, 1 / 3), (data_file, 1 / 2), (data_file, -40),
                        (os.path.join(step_dir, "default", "_METADATA"), 1 / 2)):
        original = open(path, "rb").read()
        _flip_byte(path, int(len(original) * where) if where > 0 else len(original) + where)
        with pytest.raises(CheckpointError, match=r"checkpoints/8 is unusable"):
            rundir.load_classifier(workdir, step=8)
        open(path, "wb").write(original)
    _flip_byte(data_file, os.path.getsize(data_file) // 2)
    os.makedirs(os.path.join(workdir, "checkpoints", "12"))  # an empty step folder
    capsys.readouterr()

    clf = rundir.load_classifier(workdir)  # evaluate's path: falls back and says so
    err = capsys.readouterr().err
    assert "checkpoints/12 is unusable" in err and "skipping it" in err
    assert "checkpoints/8 is unusable" in err and "using checkpoint step 4" in err
    assert clf.epoch == 1

    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write('{"epoch": 2, "train_lo')  # a crash mid-write
    train_and_evaluate(config, workdir, mesh=parallel.make_mesh(1))  # resumes from step 4
    out = capsys.readouterr()
    assert "resumed" in out.out and "step 4" in out.out
    assert "dropped a partial last line" in out.err
    moved_aside = os.listdir(os.path.join(workdir, rundir.checkpoints.CORRUPT_DIR))
    assert sorted(name.split("-")[0] for name in moved_aside) == ["12", "8"]
    assert [r["epoch"] for r in rundir.read_metrics(workdir)] == [1, 2]  # 1-based epochs
    for a, b in zip(reference, _params(rundir.load_classifier(workdir))):
        np.testing.assert_array_equal(a, b)  # retrained epoch 2 bitwise as before

    assert train_and_evaluate(config, workdir, mesh=parallel.make_mesh(1)) == {}
    assert "the run is complete (2 of 2 epochs" in capsys.readouterr().out

    # data.source may change on resume only to data with the same split sizes.
    with np.load(os.path.join(ROOT, "fosc_jax", "data", "mnist_subset.npz")) as d:
        arrays = {k: d[k] for k in d.files}
    same, fewer = tmp_path / "same", tmp_path / "fewer"
    same.mkdir(), fewer.mkdir()
    np.savez(same / "mnist.npz", **arrays)
    np.savez(fewer / "mnist.npz", **{**arrays, "x_test": arrays["x_test"][:100],
                                    "y_test": arrays["y_test"][:100]})
    moved = tiny_config.get_config("standard", epochs=2)
    moved.data.source = f"files:{fewer}"
    with pytest.raises(ConfigError, match=r"other split sizes .*test_examples: 500 -> 100"):
        train_and_evaluate(moved, workdir, mesh=parallel.make_mesh(1))
    moved.data.source = f"files:{same}"
    assert train_and_evaluate(moved, workdir, mesh=parallel.make_mesh(1)) == {}


def test_non_finite_training_stops_at_the_first_bad_step(tmp_path, monkeypatch):
    real = trainer_module.make_optimizer

    def poisoned(config, steps_per_epoch):  # the 6th update (count 5) turns weights to NaN
        return optax.chain(real(config, steps_per_epoch),
                           optax.scale_by_schedule(lambda n: jax.numpy.where(n >= 5, np.nan, 1.0)))

    monkeypatch.setattr(trainer_module, "make_optimizer", poisoned)
    workdir = str(tmp_path)
    with pytest.raises(NonFiniteError, match=r"NaN/Inf at step 6 \(epoch 2\).*newest checkpoint "
                                             r"\(step 4"):
        train_and_evaluate(tiny_config.get_config("standard", epochs=2), workdir,
                           mesh=parallel.make_mesh(1))
    steps = sorted(int(n) for n in os.listdir(os.path.join(workdir, "checkpoints")) if n.isdigit())
    assert steps == [4]
    assert [r["epoch"] for r in rundir.read_metrics(workdir)] == [1]
    assert not os.path.exists(os.path.join(workdir, "fosc", "epoch_0002.npz"))  # the bad epoch
    assert all(np.isfinite(a).all() for a in _params(rundir.load_classifier(workdir)))


# ------------------------------------------------------------------ lock and signals


def test_second_training_in_a_workdir_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from fosc_jax.rundir.lock import WorkdirLock; "
         "lock = WorkdirLock(sys.argv[1]); print('held', flush=True); time.sleep(120)",
         str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(WorkdirLockedError,
                           match=rf"in use by another training \(pid {holder.pid} on host "
                                 rf"{socket.gethostname()}"):
            train_and_evaluate(tiny_config.get_config(), str(tmp_path), mesh=parallel.make_mesh(1))
        assert not os.path.exists(tmp_path / "config.json")
    finally:
        holder.kill()  # SIGKILL: no cleanup code runs in the holder
        holder.wait(timeout=30)
    WorkdirLock(str(tmp_path)).release()  # free again at once


def test_sigint_is_handled_like_sigterm():
    # What was installed before (default_int_handler; SIG_IGN when the run was started in the
    # background without job control) is what restore() must put back.
    before = signal.getsignal(signal.SIGINT)
    flag = training.PreemptionFlag()
    try:
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pytest.fail("SIGINT raised KeyboardInterrupt instead of requesting a checkpoint")
        assert flag(0)
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C interrupts at once
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        flag.restore()
    assert signal.getsignal(signal.SIGINT) is before


# ------------------------------------------------------------------ two processes


def test_multiprocess_launch_reads_the_documented_environment():
    env = {"FOSC_JAX_COORDINATOR": "127.0.0.1:1234", "FOSC_JAX_NUM_PROCESSES": "2",
           "FOSC_JAX_PROCESS_ID": "1"}
    assert parallel.distributed_args(env) == {
        "coordinator_address": "127.0.0.1:1234", "num_processes": 2, "process_id": 1}
    assert parallel.distributed_args({}) is None
    assert parallel.distributed_args({"FOSC_JAX_MULTIHOST": "1"}) == {}  # JAX auto-detects
    with pytest.raises(UserError, match="set all of FOSC_JAX_COORDINATOR"):
        parallel.distributed_args({"FOSC_JAX_NUM_PROCESSES": "2"})
    with pytest.raises(UserError, match="0 <= id < count"):
        parallel.distributed_args({**env, "FOSC_JAX_PROCESS_ID": "2"})


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_train_resume_and_evaluate_like_one_with_two_devices(tmp_path):
    if len(jax.devices()) < 2:
        pytest.skip("needs 2 devices for the one-process reference (tests/conftest.py forces 4)")
    workdir = str(tmp_path / "two")
    env = {**os.environ, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
           "FOSC_JAX_COORDINATOR": f"127.0.0.1:{_free_port()}", "FOSC_JAX_NUM_PROCESSES": "2"}
    worker = [sys.executable, os.path.join(ROOT, "tests", "multihost_worker.py"), workdir]
    # Process 1 runs with umask 077, process 0 with 022: a file process 1 wrote would be 0600.
    logs = [open(tmp_path / f"process_{i}.log", "w+") for i in range(2)]
    procs = [subprocess.Popen(["sh", "-c", f"umask {mask} && exec \"$@\"", "sh"] + worker,
                              env={**env, "FOSC_JAX_PROCESS_ID": str(i)}, cwd=ROOT,
                              stdout=logs[i], stderr=subprocess.STDOUT, text=True)
             for i, mask in ((0, "022"), (1, "077"))]
    try:
        # Meanwhile, the reference: one process, two devices, the same config, no stop.
        import multihost_worker
        reference = str(tmp_path / "one")
        train_and_evaluate(multihost_worker.get_config(), reference, mesh=parallel.make_mesh(2))
        for p in procs:
            p.wait(timeout=540)
    finally:
        for p in procs:
            p.kill()
    outs = [(log.seek(0), log.read())[1] for log in logs]
    for i, (p, out) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {i}:\n{out[-4000:]}"
        assert f"process {i} done" in out
    assert "stopped at step 2" in outs[0] and "epoch 1: loss" in outs[0]
    assert "epoch 1: loss" not in outs[1]  # only process 0 reports

    for log in logs:
        log.close()
    written = [os.path.join(r, f) for r, _, fs in os.walk(workdir) for f in fs
               if "checkpoints" not in r]
    assert {os.path.relpath(p, workdir) for p in written} >= {
        ".lock", "config.json", "data_sizes.json", "metrics.jsonl", "fosc/epoch_0001.npz",
        "eval/results.json"}
    assert {oct(os.stat(p).st_mode & 0o777) for p in written} == {"0o644"}

    two = rundir.read_metrics(workdir)
    assert [r["epoch"] for r in two] == [1] and two[0]["resumed_mid_epoch"] is True
    for a, b in zip(_params(rundir.load_classifier(reference)),
                    _params(rundir.load_classifier(workdir))):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    with open(os.path.join(workdir, "eval", "results.json")) as f:
        record, = json.load(f)["runs"]
    assert record["num_devices"] == 2 and record["white_box"]["fgsm"]["n"] == 16
