"""Sections of RESULTS.md built from the experiment, the scale and the records alone: the
setup table, the machine and commits, the training table, the discussion and the GPU recipe.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np

from fosc_jax.reproduce import seeds
from fosc_jax.reproduce.experiments import Experiment
from fosc_jax.reproduce.plan import Run, Scale

LABELS = {"unsecured": "Unsecured", "standard": "Standard (Madry)",
          "curriculum": "Curriculum", "dynamic": "Dynamic"}
ATTACK_LABELS = {"fgsm": "FGSM", "pgd10": "PGD-10", "pgd20": "PGD-20", "cw": "CW-inf"}


def pct(entry: Optional[Mapping]) -> Optional[float]:
    """An accuracy entry ({accuracy, ...}) in %, None for none."""
    return None if entry is None else 100.0 * entry["accuracy"]


def provenance_lines(prov: Mapping, names: list[str]) -> list[str]:
    """Which commit and machine trained and evaluated each run (OUT/provenance.json)."""
    from fosc_jax.reproduce.provenance import run_sentence
    # AutoAttack and the FOSC diagnostic run on defense models only: the others are not
    # "missing" there.
    lines = [f"- {run_sentence(prov, names, stage, verb, stage in ('train', 'eval'))}."
             for stage, verb in (("train", "trained"), ("eval", "evaluated"),
                                 ("autoattack", "AutoAttack"),
                                 ("convergence", "FOSC diagnostic"))
             if any(stage in prov.get("runs", {}).get(n, {}) for n in names)]
    if not lines:
        return [f"Code: training at commit {commits(prov, 'train_commit')}, evaluation at "
                f"{commits(prov, 'eval_commit')}.", ""]
    note = prov.get("note")
    return ["Code and machines, per run:", ""] + lines + ([f"- {note}"] if note else []) + [""]


def honesty_lines(records: Mapping[str, Mapping], read_within_model: bool = False
                  ) -> list[str]:
    """The honesty checks: one table of the convergence report (share of each attack's
    robust points whose final FOSC exceeds tau, and those points as accuracy), then every
    other warning per model."""
    L = ["", "## Honesty checks", ""]
    attacks = [a for a in ATTACK_LABELS if any(
        ((rec.get("convergence") or {}).get(a) or {}).get("unconverged") is not None
        for rec in records.values())]
    rows = []
    for name, rec in records.items():
        conv = rec.get("convergence") or {}
        cells = []
        for a in attacks:
            e = conv.get(a)
            cells.append("-" if not e or e.get("unconverged") is None else
                         f"{100 * e['unconverged']['accuracy']:.1f} "
                         f"({100 * e['unconverged_points']:.1f})")
        if any(c != "-" for c in cells):
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
    if rows:
        taus = sorted({f"{e['tau']:g}" for rec in records.values()
                       for e in (rec.get("convergence") or {}).values()
                       if e.get("tau") is not None})
        L += [f"Robust points that end unconverged: % of each attack's robust points whose "
              f"final FOSC (box-aware, of the attack's own loss) exceeds tau "
              f"{' / '.join(taus)}, and in brackets the same points as points of accuracy "
              "(the rule `convergence` warns above 1). There the attack had not converged, "
              "so the accuracy may be too high."
              + (" FOSC's scale differs from model to model (the FOSC diagnostic above: its "
                 "0.9 quantile over truly robust points spans a wide range), so read a share "
                 "against the other attacks on the same model, not across models; AutoAttack "
                 "(above) measures how far the numbers overstate." if read_within_model
                 else ""), "",
              "| run | " + " | ".join(ATTACK_LABELS[a] for a in attacks) + " |",
              "|---|" + "---|" * len(attacks)] + rows + [""]
    L += ["Other checks:" if rows else "Checks:", ""]
    quiet, unchecked = [], []
    for name, rec in records.items():
        if rec.get("honesty") is None and not rec["white_box"]:
            unchecked.append(name)
            continue
        warns = [w for w in (rec.get("honesty") or {}).get("warnings") or []
                 if not (rows and w.get("check") == "convergence")]
        if not warns:
            quiet.append(name)
            continue
        L.append(f"- {name}: " + "; ".join(w.get("message", str(w)).rstrip(".")
                                           for w in warns) + ".")
    if quiet:
        L.append(f"- no warning: {', '.join(quiet)}")
    if unchecked:
        L.append(f"- scored clean only, nothing to check: {', '.join(unchecked)}")
    return L


def commits(prov: Mapping, key: str) -> str:
    """The commits that ran a stage (a resumed stage may span several)."""
    value = prov.get(key, "unknown")
    return value if isinstance(value, str) else " then ".join(value)


def seconds(rows: Sequence[Mapping]) -> float:
    """Epoch wall time of a run's metrics rows."""
    return float(sum(r.get("seconds", 0.0) for r in rows))


def setup_lines(exp: Experiment, scale: Scale, cfg) -> list[str]:
    """The paper's settings beside this scale's (``cfg``: the config of a Dynamic run)."""
    paper = exp.schedule
    which = ("all" if not scale.train_images else "the first N of the training set"
             if cfg.data.subset == "first" else "a seeded random subset")
    attacks = ("same" if len(scale.attacks) == len(ATTACK_LABELS) else
               "only " + ", ".join(ATTACK_LABELS[a] for a in scale.attacks))
    return [
        "## Setup", "",
        "| | paper | here |", "|---|---|---|",
        f"| training images | {paper.train_images:,} | "
        f"{scale.train_images or paper.train_images:,} ({which}) |",
        f"| epochs (same for every defense) | {paper.epochs} | {scale.epochs} |",
        f"| lr 0.01, / 10 at epochs | {', '.join(map(str, paper.lr_drops))} | "
        f"{', '.join(str(e) for e in cfg.optim.lr_drop_epochs)} |",
        f"| Dynamic: c_max 0.5, c_t reaches 0 at T' | {paper.t_prime} | {cfg.defense.t_prime} |",
        f"| Curriculum (fixed rule): k = 0..10, +1 every | {paper.epochs / 11:.2f} epochs | "
        f"{scale.epochs / 11:.2f} epochs |",
        exp.prose.attack_row, exp.prose.bn_row,
        f"| test images | 10,000 | {scale.test_images or 10_000:,} "
        f"({'all' if scale.test_images is None else 'a seeded random subset'}; n beside every "
        "number: a record scored earlier on another n shows its own) |",
        "| evaluation attacks | FGSM; PGD-10/20 step eps/4, random start; CW-inf kappa 50, "
        f"30 steps | {attacks} |",
        exp.prose.blackbox_row.format(epochs=scale.surrogate_epochs or scale.epochs), ""]


def seed_sentence(runs: Sequence[Run]) -> str:
    """The seeds of each defense and of the surrogate."""
    by = {}
    for r in runs:
        if r.role == "defense":
            by.setdefault(r.defense, []).append(r.seed)
    parts = [f"{LABELS.get(d, d)} {', '.join(map(str, v))}" for d, v in by.items()]
    sur = [r.seed for r in runs if r.role == "surrogate"]
    return "; ".join(parts) + (f"; surrogate {sur[0]}" if sur else "")


def _number(value: Optional[float]) -> str:
    """A per-epoch test accuracy in %, "-" where none was measured (NaN)."""
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}"


def training_lines(runs: Sequence[Run], metrics: Mapping, scale: Scale) -> list[str]:
    """The table of every run's epochs, wall time and last per-epoch test numbers."""
    L = ["", "## Training", "", "| run | defense | seed | epochs | wall time (min) | last test "
         "clean | last test PGD-10 |", "|---|---|---|---|---|---|---|"]
    for run in runs:
        rows = metrics.get(run.name)
        if rows:
            L.append(f"| {run.name} | {run.defense} | {run.seed} | {len(rows)} | "
                     f"{seconds(rows) / 60:.1f} | {_number(rows[-1]['test_clean_acc'])} | "
                     f"{_number(rows[-1]['test_pgd10_acc'])} |")
    return L + ["", "Per-epoch test numbers use a fixed subset of "
                f"{scale.eval_per_epoch} test images.", ""]


def discussion(exp: Experiment, runs: Sequence[Run], records: Mapping,
               scale: Scale) -> list[str]:
    """What the numbers say against the paper's: the scale, Unsecured, black-box."""
    L = ["## Discussion", ""]
    s = seeds.seed_values(runs, records, "standard", "pgd20")
    if s:
        images = scale.train_images or exp.schedule.train_images
        seen = images * scale.epochs / (exp.schedule.train_images * exp.schedule.epochs)
        gap = exp.paper_white["standard"]["pgd20"] - np.mean(s)
        L.append(f"- Our Standard AT ({f'mean of {len(s)} seeds' if len(s) > 1 else 'one seed'})"
                 f" sits {gap:.1f} points below the paper's PGD-20 number. The scale explains "
                 f"most of it: {images:,} images for {scale.epochs} epochs is {seen:.1%} of the "
                 f"paper's training examples seen, and {exp.prose.scale_note}")
    unsec = records.get(next((r.name for r in runs if r.defense == "unsecured"
                              and r.role == "defense"), ""))
    if unsec and "pgd10" in unsec["white_box"]:
        paper = exp.paper_white["unsecured"]
        L.append(f"- Unsecured: clean {pct(unsec['clean']):.2f}%, PGD-10 "
                 f"{pct(unsec['white_box']['pgd10']):.2f}% (paper {paper['clean']:.2f} / "
                 f"{paper['pgd10']:.1f}): the attacks break an undefended model as they should.")
    above, below = [], []
    for run in runs:
        rec = records.get(run.name)
        if rec is None or run.role != "defense" or not rec.get("black_box") \
                or run.defense == "unsecured":
            continue
        bb = min(pct(v) for v in rec["black_box"]["attacks"].values())
        wb = min(pct(v) for v in rec["white_box"].values())
        (above if bb >= wb else below).append(f"{run.name} ({bb:.2f} vs {wb:.2f})")
    if above or below:
        L.append("- Black-box against white-box (lowest accuracy over the four attacks): "
                 + (f"above for {', '.join(above)}" if above else "")
                 + ("; " if above and below else "")
                 + (f"BELOW for {', '.join(below)}, a sign of gradient masking or a weak "
                    "white-box attack" if below else "")
                 + ". Black-box above white-box is what a model without gradient masking shows.")
    return L


def gpu_lines(exp: Experiment) -> list[str]:
    """How to run the paper's scale of this experiment on a GPU."""
    paper = exp.schedule
    return ["", "## The paper's scale on a GPU", "",
            f"With the repository and {exp.prose.data_files} only (no network):", "",
            "```bash", "pip install -e .",
            f"python -m fosc_jax.reproduce {exp.name} --scale paper --data /path/to/"
            f"{exp.dataset} --out results/{exp.name}_paper",
            "```", "",
            "It prints an estimate of its wall time after the first epoch, resumes when rerun, "
            f"and writes the same files as here ({paper.train_images:,} training images, "
            f"{paper.epochs} epochs, the full test set).", ""]
