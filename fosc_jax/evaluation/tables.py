"""Results tables in the paper's layout: defense | clean | FGSM | PGD-10 | PGD-20 | CW.

Accuracies are fractions in results.json and percentages (2 decimals) in the CSV and Markdown.
Black-box columns ("BB FGSM", ...) and the per-example worst case follow when present; a
"checks" column counts honesty warnings, which are listed under the Markdown table.
"""
from __future__ import annotations

import csv
import io
import json
import os
from typing import Any, Mapping, Sequence

import numpy as np

from fosc_jax.autoattack.runner import LABELS as AA_LABELS, NAMES as AA_NAMES
from fosc_jax.config import config_get
from fosc_jax.defenses import DEFENSES
from fosc_jax.evaluation.convergence import convergence_columns, convergence_notes
from fosc_jax.evaluation.suite import ATTACKS


def defense_label(defense: str | None, name: str | None) -> str:
    """Paper-style row label from config.defense.name (falling back to config.name)."""
    if defense:
        return DEFENSES[defense].label if defense in DEFENSES else defense
    return name or "model"


def row_labels(records: Sequence[Mapping]) -> list[str]:
    """One label per record; labels shared by several rows get ' (config.name)' appended."""
    labels = [defense_label(r.get("defense"), r.get("name") or r.get("label")) for r in records]
    extras = ([r.get("name") for r in records],
              [r.get("run") or os.path.basename(os.path.normpath(str(r.get("workdir") or "")))
               for r in records])
    for extra in extras:  # disambiguate clashes by config.name, then by run folder
        if len(set(labels)) == len(labels):
            return labels
        labels = [f"{lab} ({e})" if labels.count(lab) > 1 and e else lab
                  for lab, e in zip(labels, extra)]
    if len(set(labels)) < len(labels):  # still clashing: number them
        labels = [f"{lab} #{i + 1}" for i, lab in enumerate(labels)]
    return labels


def _columns(records: Sequence[Mapping]) -> list[tuple[str, str, tuple]]:
    """(header, csv name, path into the record) for every column some record has."""
    cols = [("clean", "clean", ("clean",))]
    for name, spec in ATTACKS.items():
        if any(name in r.get("white_box", {}) for r in records):
            cols.append((spec.label, name, ("white_box", name)))
    for name in AA_NAMES:  # AutoAttack: a non-standard budget shows in the label
        used = {(r.get("attacks", {}).get(name, {}).get("label", AA_LABELS[name]),
                 r.get("attacks", {}).get(name, {}).get("version", "standard"))
                for r in records if name in r.get("white_box", {})}
        if used:
            label, version = used.pop() if len(used) == 1 else (
                f"{AA_LABELS[name]} [mixed budgets]", "mixed")
            csv_name = name if version == "standard" else f"{name}_{version}"
            cols.append((label, csv_name, ("white_box", name)))
    for name, spec in ATTACKS.items():
        if any(name in ((r.get("black_box") or {}).get("attacks") or {}) for r in records):
            cols.append((f"BB {spec.label}", f"bb_{name}", ("black_box", "attacks", name)))
    if any(r.get("worst_case") for r in records):
        cols.append(("worst case", "worst_case", ("worst_case",)))
    return cols + convergence_columns(records, _attack_labels())


def _attack_labels() -> dict[str, str]:
    return {**{n: s.label for n, s in ATTACKS.items()}, **AA_LABELS,
            "autoattack/apgd-ce": "AA's APGD-CE"}


def _fmt(entry: Any) -> str:
    return "-" if entry is None else f"{100.0 * entry['accuracy']:.2f}"


def _checks_cell(record: Mapping) -> str:
    honesty = record.get("honesty")
    if not honesty:
        return "not run"
    n = len(honesty.get("warnings", []))
    return "ok" if n == 0 else f"{n} warning{'s' if n > 1 else ''}"


def markdown_table(records: Sequence[Mapping]) -> str:
    """The combined Markdown table (one row per record) with warnings listed below."""
    if not records:
        raise ValueError("markdown_table needs at least one record.")
    cols = _columns(records)
    labels = row_labels(records)
    header = ["defense"] + [c[0] for c in cols] + ["checks"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, r in zip(labels, records):
        cells = [label] + [_fmt(config_get(r, c[2])) for c in cols] + [_checks_cell(r)]
        lines.append("| " + " | ".join(cells) + " |")
    settings = sorted({f"eps={r['eps']:.4g}, n={r['clean']['n']}" for r in records})
    lines.append("")
    lines.append(f"Accuracy (%) under white-box attacks ({'; '.join(settings)}); "
                 "BB = crafted on the surrogate; worst case = per example over all columns "
                 "of the white-box attacks and clean.")
    for label, r in zip(labels, records):
        if r.get("eps_sweep"):
            pts = ", ".join(f"{p['eps']:.4g}: {100 * p['accuracy']:.2f}" for p in r["eps_sweep"])
            lines.append(f"- {label} PGD-10 accuracy by eps: {pts}")
    for label, r in zip(labels, records):
        aa = r.get("autoattack")
        if aa:
            steps = ", ".join(f"{c['label']} {100 * c['robust']['accuracy']:.2f}"
                              for c in aa["cascade"])
            lines.append(f"- {label} AutoAttack ({aa['description']}), robust accuracy after "
                         f"each attack: {steps}")
    lines += convergence_notes(labels, records, _attack_labels())
    for label, r in zip(labels, records):
        for w in (r.get("honesty") or {}).get("warnings", []):
            lines.append(f"- WARNING {label} [{w['check']}]: {w['message']}")
    return "\n".join(lines) + "\n"


def csv_table(records: Sequence[Mapping]) -> str:
    """The same table as CSV (percentages), one row per record, plus run metadata."""
    cols = _columns(records)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["defense", "name", "workdir", "epoch", "eps", "num_examples"]
                    + [c[1] for c in cols] + ["warnings"])
    for label, r in zip(row_labels(records), records):
        vals = [None if config_get(r, c[2]) is None else round(100.0 * config_get(r, c[2])["accuracy"], 4)
                for c in cols]
        warnings = "; ".join(f"[{w['check']}] {w['message']}"
                             for w in (r.get("honesty") or {}).get("warnings", []))
        writer.writerow([label, r.get("name"), r.get("workdir"), r.get("epoch"), r["eps"],
                         r["clean"]["n"]] + ["" if v is None else v for v in vals] + [warnings])
    return out.getvalue()


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def relative_workdirs(records: Sequence[Mapping], out_dir: str | os.PathLike) -> list[dict]:
    """Copies of ``records`` whose run folders ("workdir", the surrogate's) are relative to
    ``out_dir``: written results name no folder of this machine and move with the runs."""
    def rel(path):
        return None if path is None else os.path.relpath(os.path.abspath(path),
                                                         os.path.abspath(out_dir))
    out = []
    for r in records:
        r = dict(r)
        if r.get("workdir") is not None:
            r.setdefault("run", os.path.basename(os.path.normpath(os.path.abspath(r["workdir"]))))
            r["workdir"] = rel(r["workdir"])
        if isinstance(r.get("black_box"), Mapping) and r["black_box"].get("workdir"):
            r["black_box"] = dict(r["black_box"], workdir=rel(r["black_box"]["workdir"]))
        out.append(r)
    return out


def write_results(out_dir: str | os.PathLike, records: Sequence[Mapping]) -> dict[str, str]:
    """Write results.json ({"runs": [...]}), results.csv and results.md into ``out_dir``.

    Run folders are written relative to ``out_dir`` (the record's "run" keeps the folder's
    name for the row labels). Each file is replaced atomically (temporary file, fsync, rename), all three texts are
    built before any is written and results.json, the one read back, goes last: a crash or
    a full disk leaves the previous files, never a truncated one. Per-example arrays (a
    record's "per_example") are not written.
    """
    from fosc_jax.rundir.integrity import atomic_write_text
    records = relative_workdirs(records, out_dir)
    runs = [{k: v for k, v in r.items() if k != "per_example"} for r in records]
    texts = {"csv": csv_table(records), "md": markdown_table(records),
             "json": json.dumps({"runs": _jsonable(runs)}, indent=2)}
    os.makedirs(out_dir, exist_ok=True)
    paths = {ext: os.path.join(out_dir, f"results.{ext}") for ext in ("json", "csv", "md")}
    for ext in ("csv", "md", "json"):
        atomic_write_text(paths[ext], texts[ext])
    return paths


def read_results(path: str | os.PathLike) -> list[dict]:
    """The records of a results.json file (or of DIR/eval/results.json for a run dir)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "eval", "results.json")
    from fosc_jax.errors import RunFileError
    with open(path) as f:
        try:
            data = json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RunFileError(f"{path} is not valid JSON ({err}); rerun evaluate.py to "
                               "write it again.") from err
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
        raise RunFileError(f"{path}: expected an object with a 'runs' list; rerun "
                           "evaluate.py to write it again.")
    return data["runs"]


__all__ = ["defense_label", "row_labels", "markdown_table", "csv_table",
           "write_results", "read_results"]
