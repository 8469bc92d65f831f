"""tools/accelerator_run.sh end to end on the CPU at the smoke scale: device check, a
reproduction piece cut by its budget, and what it leaves in OUTDIR."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_a_piece_stops_at_its_budget_and_leaves_a_small_archive(tmp_path):
    out = tmp_path / "outdir"
    env = dict(os.environ, PYTHON=sys.executable, FOSC_JAX_BENCH="0", FOSC_JAX_BUDGET="1",
               FOSC_JAX_REPRODUCE="mnist --scale paper --smoke --data bundled "
                                  "--runs standard_s0 --stages train,export")
    done = subprocess.run(["bash", "tools/accelerator_run.sh", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "stopped at the budget" in done.stdout
    files = sorted(os.listdir(out))
    assert files == ["archive.tar.gz", "device_check.json", "run.log"]
    assert all(os.path.getsize(out / f) <= 16 * 2 ** 20 for f in files)
    check = json.load(open(out / "device_check.json"))
    assert check["early_exit"]["ok"] and check["bfloat16_step"]["ok"]
    assert 1 < check["early_exit"]["mean_steps"] < 10     # the exit was exercised both ways


def test_the_script_refuses_to_run_without_an_outdir():
    done = subprocess.run(["bash", "tools/accelerator_run.sh"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "usage: tools/accelerator_run.sh OUTDIR" in done.stderr
