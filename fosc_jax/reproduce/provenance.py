"""Where each number came from: the commit and the machine of every stage and every run.

OUT/provenance.json keeps, per stage key ("train_commit", "eval_commit"), the commits that
ran it, and under "runs" for each run the commits and machines that trained it (a resumed run
may span several), evaluated it, ran AutoAttack on it and measured its FOSC diagnostic. RESULTS.md prints both, so a number is never
credited to the machine that merely wrote the report.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
from typing import Mapping

from fosc_jax.rundir.integrity import atomic_write_json

PROVENANCE_FILE = "provenance.json"


def git_commit() -> str:
    """The commit of the code running now (or 'unknown' outside a git checkout)."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine() -> str:
    """This machine in a few words: the accelerator (or the CPU model and its core count)."""
    import jax
    backend = jax.default_backend()
    if backend != "cpu":
        kinds = sorted({d.device_kind for d in jax.devices()})
        return f"{jax.device_count()} x {', '.join(kinds)} ({backend})"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            model = f"{names[0]} x {len(names)} cores"
    except OSError:
        pass
    return model


def software() -> str:
    """Backend, device count and versions, for the report's setup line."""
    import jax
    return (f"{jax.default_backend()} backend, {jax.device_count()} device(s); "
            f"Python {platform.python_version()}, jax {jax.__version__}")


def read(out: str) -> dict:
    path = os.path.join(out, PROVENANCE_FILE)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def _write(out: str, prov: Mapping) -> None:
    atomic_write_json(os.path.join(out, PROVENANCE_FILE), prov, sort_keys=True)


def _append(items: list, item) -> bool:
    if items and items[-1] == item:
        return False
    items.append(item)
    return True


def record_stage(out: str, key: str) -> None:
    """Append the commit running a stage to OUT/provenance.json under ``key``."""
    prov = read(out)
    commits = prov.get(key, [])
    commits = [commits] if isinstance(commits, str) else list(commits)
    if _append(commits, git_commit()):
        prov[key] = commits
        _write(out, prov)


def record_run(out: str, name: str, stage: str) -> None:
    """Append {commit, machine} of this process to run ``name``'s ``stage`` ("train", "eval",
    "autoattack" or "convergence") list, unless it is already the last entry; and the commit to
    the stage's key ("train_commit", else "eval_commit")."""
    record_stage(out, "train_commit" if stage == "train" else "eval_commit")
    prov = read(out)
    entries = prov.setdefault("runs", {}).setdefault(name, {}).setdefault(stage, [])
    if _append(entries, {"commit": git_commit(), "machine": machine()}):
        _write(out, prov)


def run_sentence(prov: Mapping, names: list[str], stage: str, verb: str,
                 list_missing: bool = True) -> str:
    """'trained at C on M: a, b; at C2 on M2: c' over ``names`` (runs without a record are
    listed as such, unless not ``list_missing``)."""
    groups: dict[str, list[str]] = {}
    for name in names:
        entries = prov.get("runs", {}).get(name, {}).get(stage, [])
        if not entries and not list_missing:
            continue
        key = " then ".join(f"at {e['commit']} on {e['machine']}" for e in entries) \
            or "with no record"
        groups.setdefault(key, []).append(name)
    order = sorted(groups, key=lambda k: k == "with no record")   # the unrecorded last
    groups = {k: groups[k] for k in order}
    return f"{verb[:1].upper()}{verb[1:]} " + "; ".join(f"{k}: {', '.join(v)}" for k, v in groups.items())
