"""Per-run provenance: each run records the commit and machine that trained and evaluated it,
and the report credits them, not the machine that writes the report."""
import json

from fosc_jax.reproduce import provenance, sections


def test_record_run_appends_only_a_new_commit_or_machine(tmp_path, monkeypatch):
    where = {"commit": "aaa", "machine": "CPU A"}
    monkeypatch.setattr(provenance, "git_commit", lambda: where["commit"])
    monkeypatch.setattr(provenance, "machine", lambda: where["machine"])
    out = str(tmp_path)
    provenance.record_run(out, "standard_s0", "train")
    provenance.record_run(out, "standard_s0", "train")          # a resume on the same: no entry
    where["machine"] = "GPU B"
    provenance.record_run(out, "standard_s0", "train")          # resumed elsewhere: a second one
    provenance.record_run(out, "dynamic_s0", "eval")
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["runs"]["standard_s0"]["train"] == [
        {"commit": "aaa", "machine": "CPU A"}, {"commit": "aaa", "machine": "GPU B"}]
    assert prov["runs"]["dynamic_s0"] == {"eval": [{"commit": "aaa", "machine": "GPU B"}]}
    assert prov["train_commit"] == ["aaa"] and prov["eval_commit"] == ["aaa"]


def test_report_lines_group_runs_by_where_they_ran():
    prov = {"runs": {
        "a": {"train": [{"commit": "c1", "machine": "M1"}],
              "autoattack": [{"commit": "c4", "machine": "M1"}],
              "convergence": [{"commit": "c5", "machine": "M2"}]},
        "b": {"train": [{"commit": "c1", "machine": "M1"}], "eval": [{"commit": "c3", "machine": "M2"}]},
        "c": {"train": [{"commit": "c2", "machine": "M2"}]}}}
    lines = sections.provenance_lines(prov, ["a", "b", "c"])
    assert "- Trained at c1 on M1: a, b; at c2 on M2: c." in lines
    assert "- Evaluated at c3 on M2: b; with no record: a, c." in lines
    assert "- AutoAttack at c4 on M1: a." in lines   # only defense models get AutoAttack
    assert "- FOSC diagnostic at c5 on M2: a." in lines


def test_report_lines_fall_back_to_stage_commits_without_run_records():
    lines = sections.provenance_lines({"train_commit": ["x"], "eval_commit": "y"}, ["a"])
    assert lines[0] == "Code: training at commit x, evaluation at y."


def test_result_json_files_get_the_usual_file_mode_and_survive_a_failed_write(tmp_path,
                                                                              monkeypatch):
    """Provenance and result JSONs go through one atomic writer: the file gets 0666 minus the
    umask (a bare temporary file would stay 0600, unreadable to a group sharing the results),
    numpy scalars are written as numbers, and a write that fails leaves the old file whole."""
    import os
    import numpy as np
    import pytest
    from fosc_jax.rundir.integrity import atomic_write_json

    monkeypatch.setattr(provenance, "git_commit", lambda: "aaa")
    monkeypatch.setattr(provenance, "machine", lambda: "CPU A")
    old = os.umask(0o022)
    try:
        provenance.record_run(str(tmp_path), "standard_s0", "train")
        path = tmp_path / "eval" / "run.json"
        atomic_write_json(str(path), {"accuracy": np.float32(0.75)})
    finally:
        os.umask(old)
    for f in (tmp_path / "provenance.json", path):
        assert f.stat().st_mode & 0o777 == 0o644
    assert json.loads(path.read_text()) == {"accuracy": 0.75}
    with pytest.raises(TypeError):
        atomic_write_json(str(path), {"accuracy": object()})
    assert json.loads(path.read_text()) == {"accuracy": 0.75}
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.json"]

