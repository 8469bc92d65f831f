"""tools/accelerator_run.sh end to end on the CPU at the smoke scale: device check, a
reproduction piece cut by its budget and carried in several archive volumes, a second piece
that continues from them, and what each leaves in OUTDIR."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOLUME = 5 * 2 ** 18     # 1.25 MiB: the smoke run's checkpoint (3 MiB) needs three volumes


def _piece(outdir, *archive, budget="1", volume=VOLUME):
    env = dict(os.environ, PYTHON=sys.executable, FOSC_JAX_BENCH="0", FOSC_JAX_BUDGET=budget,
               FOSC_JAX_ARCHIVE_VOLUME_BYTES=str(volume),
               FOSC_JAX_REPRODUCE="mnist --scale paper --smoke --data bundled "
                                  "--runs standard_s0 --stages train,export")
    return subprocess.run(["bash", "tools/accelerator_run.sh", str(outdir), *map(str, archive)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def _volumes(outdir):
    return sorted(f for f in os.listdir(outdir) if f.startswith("archive.tar.gz"))


@pytest.mark.slow
def test_a_piece_stops_at_its_budget_and_the_next_continues_from_its_volumes(tmp_path):
    out = tmp_path / "outdir"
    done = _piece(out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stopped at the budget" in done.stdout
    files = sorted(os.listdir(out))
    vols = _volumes(out)
    assert vols[0] == "archive.tar.gz" and len(vols) >= 3, files
    assert files == sorted(vols + ["device_check.json", "run.log"]) and len(files) <= 8
    assert all(os.path.getsize(out / f) <= VOLUME for f in vols)
    check = json.load(open(out / "device_check.json"))
    assert check["early_exit"]["ok"] and check["bfloat16_step"]["ok"]
    assert 1 < check["early_exit"]["mean_steps"] < 10     # the exit was exercised both ways

    nxt = tmp_path / "next"
    done = _piece(nxt, out / "archive.tar.gz", budget="600")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done: the reproduction finished" in done.stdout
    log = open(nxt / "run.log").read()
    assert "unpacked" in log and "resumed " in log, log[-3000:]
    assert len(os.listdir(nxt)) <= 8 and _volumes(nxt)[0] == "archive.tar.gz"


@pytest.mark.slow
def test_a_piece_is_refused_before_compute_when_its_archive_cannot_fit(tmp_path):
    """A volume set missing a part, or an archive that would outgrow the 8 files, stops the
    script in one line before the device check."""
    out = tmp_path / "outdir"
    done = _piece(out, volume=2 ** 19)          # 3 MiB of checkpoint: 7 volumes of 0.5 MiB
    assert done.returncode == 2, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert "error: --archive-volumes:" in last and "checkpoint of standard_s0" in last, last
    assert sorted(os.listdir(out)) == ["run.log"]

    from fosc_jax.reproduce import archive
    tree = tmp_path / "tree" / "models" / "m"
    tree.mkdir(parents=True)
    (tree / "variables.npz").write_bytes(os.urandom(3 * 2 ** 19))
    packed = archive.pack(str(tmp_path / "tree"), str(tmp_path / "box" / "a.tar.gz"),
                          volume_bytes=2 ** 19, max_volumes=8)
    os.remove(packed.files[1])
    done = _piece(tmp_path / "again", packed.files[0])
    assert done.returncode == 2, done.stdout + done.stderr
    last = done.stdout.strip().splitlines()[-1]
    assert "error: --from-archive:" in last and "part2, is missing" in last, last


def test_the_script_refuses_to_run_without_an_outdir():
    done = subprocess.run(["bash", "tools/accelerator_run.sh"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "usage: tools/accelerator_run.sh OUTDIR" in done.stderr
