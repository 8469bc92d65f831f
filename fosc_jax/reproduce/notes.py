"""Prose sections of RESULTS.md computed from the runs' metrics: the eps 0.3 collapse and its
remedy, and epochs far slower than their run's median."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def collapse_section(runs, metrics) -> list[str]:
    demo = next((r for r in runs if r.role == "demo"), None)
    L = ["## The eps 0.3 collapse and its remedy", "",
         "At the paper's settings with BatchNorm in train mode inside the attack (Madry's "
         "choice, our CIFAR default), every defense collapses in the first epoch to a "
         "constant output: train loss ln 10 = 2.30, test accuracy ~11%, FOSC 0 (so Dynamic "
         "stops every example after one step). Measured on the first 10,000 training images "
         "with a probe of the 128-unit dense layer (the only ReLU not followed by "
         "BatchNorm): the first adversarial batches have a loss of ~6, the large gradients "
         "push that layer's pre-activations negative, and the fraction of its units active "
         "on any test image falls from 100% to 4.7% after 10 steps and 0% after 30. The "
         "logits are then the output bias alone and no gradient reaches the network again.", "",
         "The authors' released Keras code attacks with BatchNorm in inference mode (its "
         "attack's `sess.run` never feeds the Keras learning phase, which defaults to test "
         "mode). With the same inference-mode attack here (`attack.bn_mode = \"eval\"`, set in "
         "`fosc_jax.config.mnist_config` for every MNIST defense alike), about 10-15% of the "
         "dense units survive the first steps and training proceeds: after 60 steps test "
         "clean accuracy is ~50% and rising. It is not a warm-up: eps, the attack and the "
         "schedule are the paper's from the first step. Other remedies we measured: lr 0.001 "
         "avoids the collapse but learns slowly; Keras' BatchNorm momentum 0.99 / epsilon "
         "1e-3 alone still collapses.", ""]
    if demo is not None and metrics.get(demo.name):
        rows = metrics[demo.name]
        std = metrics.get("standard_s0", [])[:len(rows)]
        L += ["| epoch | no remedy: test clean | no remedy: train loss | remedy: test clean | remedy: train loss |",
              "|---|---|---|---|---|"]
        for i, r in enumerate(rows):
            s = std[i] if i < len(std) else None
            L.append(f"| {r['epoch']} | {100 * r['test_clean_acc']:.1f} | {r['train_loss']:.3f} | "
                     + (f"{100 * s['test_clean_acc']:.1f} | {s['train_loss']:.3f} |" if s else "- | - |"))
    return L


def outlier_epochs(metrics: Mapping[str, Sequence[Mapping]],
                   explain_curriculum: bool = True) -> list[str]:
    """A note for every epoch whose wall time is over 5x its run's median: epoch seconds are
    wall-clock, so a machine that paused (or a clock that jumped) shows up here, not as
    compute. ``explain_curriculum``: add what the MNIST reproduction's slow Curriculum epoch
    was (a suspended machine)."""
    notes = []
    for name, rows in metrics.items():
        secs = [r.get("seconds", 0.0) for r in rows]
        med = float(np.median(secs)) if secs else 0.0
        for r, t in zip(rows, secs):
            if med > 0 and t > 5 * med:
                notes.append(f"- {name}, epoch {r['epoch']}: {t:.0f} s against a median of "
                             f"{med:.0f} s per epoch of this run.")
    if not notes:
        return []
    head = ("Epochs far slower than their run's median (wall-clock times: a pause of the "
            "machine counts too):")
    if explain_curriculum and any(n.startswith("- curriculum,") for n in notes):
        head += (" Curriculum's is not compute. Its log shows XLA's slow-compile alarm, due 2 "
                 "minutes into a compile, firing 33 minutes late and 1 s before the compile "
                 "ended; that program (level k = 10) compiles in about 6 s when measured, "
                 "like Standard's. The machine was suspended, so the run's wall time "
                 "overstates its cost by about 34 minutes.")
    return [head, ""] + notes + [""]
