"""Time-boxed reproduction carried by an archive: what goes in, what is refused, and a run
cut mid-epoch by its time budget, packed into several volumes, unpacked elsewhere and
resumed, bitwise equal to the uninterrupted run. The volumes themselves: test_volumes.py."""
import io
import json
import os
import tarfile

import numpy as np
import pytest

from fosc_jax.reproduce import __main__ as cli
from fosc_jax.reproduce import archive, pipeline, plan
from fosc_jax.reproduce.budget import StopFlag


def _touch(path, data=b"x"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def test_members_keep_the_newest_complete_checkpoint_only(tmp_path):
    out = str(tmp_path / "out")
    ck = os.path.join(out, "runs", "a", "checkpoints")
    for step, done in ((78, True), (156, True), (234, False)):   # 234: interrupted save
        _touch(os.path.join(ck, str(step), "default", "d", "blob"))
        if done:
            _touch(os.path.join(ck, str(step), archive.COMPLETE_MARK))
    _touch(os.path.join(out, "runs", "a", "metrics.jsonl"))
    _touch(os.path.join(out, "runs", "a", ".lock"))
    _touch(os.path.join(out, "eval", ".tmp_abc"))
    # Run b is finished and exported: its model carries it, its checkpoint is not needed.
    _touch(os.path.join(out, "runs", "b", "checkpoints", "78", archive.COMPLETE_MARK))
    for f in archive.EXPORT_FILES:
        _touch(os.path.join(out, "models", "b", f))
    names = list(archive.members(out))
    assert names == ["models/b/config.json", "models/b/model.json", "models/b/variables.npz",
                     "runs/a/metrics.jsonl", "runs/a/checkpoints/156/commit_success.txt",
                     "runs/a/checkpoints/156/default/d/blob"]


def test_pack_refuses_an_archive_over_the_limit_and_writes_nothing(tmp_path):
    out = str(tmp_path / "out")
    _touch(os.path.join(out, "models", "m", "variables.npz"), os.urandom(200_000))
    target = str(tmp_path / "a.tar.gz")
    with pytest.raises(archive.ArchiveError,
                       match=r"0.2 MiB, over the 98 KiB limit; largest .*: models/m \(0.2 MiB\)"):
        archive.pack(out, target, volume_bytes=100_000)
    assert not os.path.exists(target) and os.listdir(tmp_path) == ["out"]
    with pytest.raises(archive.ArchiveError, match=r"over the limit of 2 volumes of 8 KiB "
                                                   r"\(it needs 2[0-9]\); .*models/m"):
        archive.pack(out, target, volume_bytes=8192, max_volumes=2)
    assert os.listdir(tmp_path) == ["out"]


def test_unpack_refuses_entries_outside_the_folder_and_a_used_folder(tmp_path):
    bad = str(tmp_path / "bad.tar.gz")
    with tarfile.open(bad, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(archive.ArchiveError, match="outside a plain folder tree"):
        archive.unpack(bad, str(tmp_path / "new"))
    assert not os.path.exists(tmp_path / "escape.txt")
    used = tmp_path / "used"
    _touch(str(used / "f"))
    with pytest.raises(archive.ArchiveError, match="not empty"):
        archive.unpack(bad, str(used))


def test_stop_flag_stops_at_the_budget_minus_the_margin():
    now = [100.0]
    flag = StopFlag(10.0, margin_s=3.0, clock=lambda: now[0], install=False)
    now[0] = 106.9
    assert not flag(0) and flag.left() == pytest.approx(0.1)
    now[0] = 107.0
    assert flag(0) and flag.reason == "the time budget"


@pytest.mark.slow
def test_budget_cut_archive_and_resume_elsewhere_equal_the_uninterrupted_run(tmp_path,
                                                                              monkeypatch):
    # Volumes of 1 MiB: the checkpoint in progress (3.4 MB) travels in four of them.
    monkeypatch.setenv(archive.VOLUME_BYTES_ENV, str(2 ** 20))
    # 512 images = 4 steps an epoch; a progress chunk per step so the budget can cut mid-epoch.
    monkeypatch.setattr(plan, "SMOKE", {**plan.SMOKE, "train_images": 512})
    make = pipeline.run_config

    def one_step_chunks(*args, **kwargs):
        c = make(*args, **kwargs)
        c.log_every = 1
        return c
    monkeypatch.setattr(pipeline, "run_config", one_step_chunks)
    base = ["mnist", "--smoke", "--data", "bundled", "--stages", "train,export",
            "--runs", "standard_s0"]
    whole = str(tmp_path / "whole")
    assert cli.main(base + ["--out", whole]) == 0

    cut, box = str(tmp_path / "cut"), str(tmp_path / "carry.tar.gz")
    # A budget spent before the first poll: the loop stops after its first step (mid-epoch 1).
    assert cli.main(base + ["--out", cut, "--time-budget", "0.001", "--time-margin", "0",
                            "--archive", box, "--archive-volumes", "8"]) == cli.EXIT_STOPPED
    assert pipeline.epochs_done(os.path.join(cut, "runs", "standard_s0")) == 0
    carried = sorted(f for f in os.listdir(tmp_path) if f.startswith("carry.tar.gz"))
    assert len(carried) >= 3, carried
    assert all(os.path.getsize(tmp_path / f) <= 2 ** 20 for f in carried)

    fresh = str(tmp_path / "elsewhere" / "fresh")
    assert cli.main(base + ["--out", fresh, "--from-archive", box]) == 0
    rows = [json.loads(line) for line in open(os.path.join(fresh, "runs", "standard_s0",
                                                           "metrics.jsonl"))]
    assert rows[0]["resumed_mid_epoch"] is True
    a = np.load(os.path.join(whole, "models", "standard_s0", "variables.npz"), allow_pickle=False)
    b = np.load(os.path.join(fresh, "models", "standard_s0", "variables.npz"), allow_pickle=False)
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ref = [json.loads(line) for line in open(os.path.join(whole, "runs", "standard_s0",
                                                          "metrics.jsonl"))]
    # The resumed epoch's training means cover only the steps after the cut (the row says
    # resumed_mid_epoch); its end-of-epoch test numbers and every later row are equal.
    drop = ("seconds", "images_per_sec", "resumed_mid_epoch")
    keep = lambda r, first: {k: v for k, v in r.items() if k not in drop and not (  # noqa: E731
        first and k.startswith(("train_", "fosc_", "attack_steps")))}
    assert ([keep(r, i == 0) for i, r in enumerate(rows)]
            == [keep(r, i == 0) for i, r in enumerate(ref)])


def test_budget_flags_are_checked_in_one_line(tmp_path, capsys):
    used = tmp_path / "used"
    _touch(str(used / "f"))
    for extra, what in ((["--time-budget", "-5"], "--time-budget"),
                        (["--time-margin", "nan"], "--time-margin"),
                        (["--from-archive", str(tmp_path / "none.tar.gz")], "--from-archive"),
                        (["--archive", str(tmp_path)], "--archive"),
                        (["--archive", str(tmp_path / "a.tar.gz"), "--archive-volumes", "0"],
                         "--archive-volumes")):
        assert cli.main(["mnist", "--data", "bundled", "--out", str(used)] + extra) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {what}") and err.count("\n") == 1, err


def test_a_reproduction_whose_archive_would_outgrow_its_volumes_is_refused_first(tmp_path,
                                                                                capsys):
    """The paper's MNIST scale packs into about 60 MiB at its largest: refused in one line
    naming the largest contributors for one volume, accepted for four, before any compute."""
    out, box = str(tmp_path / "out"), str(tmp_path / "a.tar.gz")
    base = ["mnist", "--scale", "paper", "--data", "bundled", "--out", out, "--archive", box,
            "--one-program", "no", "--check-only"]
    assert cli.main(base) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --archive-volumes: the archive would grow to about ") and \
        err.count("\n") == 1, err
    assert "4 volumes of 16.0 MiB, over the 1 allowed" in err
    assert "exported models of 23 runs" in err and "FOSC samples of 24 runs" in err
    assert cli.main(base + ["--archive-volumes", "4"]) == 0
    assert os.listdir(tmp_path) == []


def test_a_bad_volume_size_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(archive.VOLUME_BYTES_ENV, "1k")
    assert cli.main(["mnist", "--data", "bundled", "--out", str(tmp_path / "o"),
                     "--archive", str(tmp_path / "a.tar.gz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {archive.VOLUME_BYTES_ENV}: '1k'") and err.count("\n") == 1
