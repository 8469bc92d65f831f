"""Pieces of the reproduction's stages and report: the scoring loop the section3 and
autoattack stages share, and the honesty section of RESULTS.md."""
import json

from fosc_jax.reproduce import provenance, sections


def test_scoring_loop_skips_scored_and_unexported_runs_and_stops_between_models(
        tmp_path, monkeypatch):
    """The loop the section3 and autoattack stages share: a run already scored is read back
    (not scored again), one with no export is skipped, stop() ends it between models, and
    only the runs it scores get a provenance record."""
    import os
    from fosc_jax import rundir
    from fosc_jax.reproduce import pipeline
    from fosc_jax.reproduce.plan import Run

    monkeypatch.setattr(provenance, "git_commit", lambda: "aaa")
    monkeypatch.setattr(provenance, "machine", lambda: "CPU A")
    out = str(tmp_path)
    runs = [Run(name, "standard", 0) for name in ("done", "unexported", "a", "b")]
    for run in runs:
        if run.name != "unexported":
            os.makedirs(pipeline.model_dir(out, run))
            open(os.path.join(pipeline.model_dir(out, run), rundir.EXPORT_FILE), "w").close()
    path_of = lambda run: os.path.join(out, "eval", f"{run.name}.json")  # noqa: E731
    os.makedirs(tmp_path / "eval")
    (tmp_path / "eval" / "done.json").write_text('{"accuracy": 0.5}')
    scored, lines = [], []

    def score(run, folder):
        scored.append((run.name, os.path.relpath(folder, out)))
        return {"accuracy": 0.25}

    records = pipeline.score_each(runs, out, path_of, score, lambda r: f"acc {r['accuracy']}",
                                  tag="t", stage="eval", log=lines.append,
                                  stop=lambda: len(scored) == 1)
    assert scored == [("a", os.path.join("models", "a"))]   # b: stop() came true after a
    assert records["done"] == {"accuracy": 0.5} and records["a"]["accuracy"] == 0.25
    assert set(records) == {"done", "a"}
    assert json.loads((tmp_path / "eval" / "a.json").read_text())["accuracy"] == 0.25
    assert not (tmp_path / "eval" / "b.json").exists()
    assert lines[0] == "[t] unexported: no exported model yet, skipped"
    assert lines[1].startswith("[t] a: acc 0.25 (")
    assert set(provenance.read(out)["runs"]) == {"a"}


def test_honesty_section_tabulates_the_convergence_report_and_lists_other_warnings():
    """The convergence shares of each record become one table (attacks without a tau left
    out); other warnings stay as sentences, and quiet or unchecked models share a line."""
    def conv(share, points):
        return dict(tau=0.23, unconverged=dict(accuracy=share), unconverged_points=points)
    records = {
        "a": dict(white_box={"pgd20": {}}, convergence=dict(
            pgd20=conv(0.15, 0.099), cw=dict(tau=None, unconverged=None)),
            honesty=dict(warnings=[dict(check="convergence", message="15% unconverged."),
                                   dict(check="restart", message="a restart found more.")])),
        "b": dict(white_box={"pgd20": {}}, convergence=dict(pgd20=conv(0.0, 0.0)),
                  honesty=dict(warnings=[])),
        "s": dict(white_box={}, honesty=None)}
    lines = sections.honesty_lines(records, read_within_model=True)
    assert "| run | PGD-20 |" in lines                      # CW has no tau: no column
    assert "| a | 15.0 (9.9) |" in lines and "| b | 0.0 (0.0) |" in lines
    assert "- a: a restart found more." in lines             # the convergence one is tabulated
    assert "- no warning: b" in lines
    assert "- scored clean only, nothing to check: s" in lines
    assert any("not across models" in line for line in lines)
