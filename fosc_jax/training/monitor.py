"""What the training loop measures and shows each epoch: the per-chunk metrics it sums, the
held-out clean / PGD accuracy, the progress bar and the one summary line per epoch."""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from fosc_jax import parallel
from fosc_jax.classifier import Classifier


def subset_accuracy(classifier: Classifier, x_uint8: np.ndarray, y: np.ndarray, *,
                    eps: float, num_steps: int, step_fraction: float, batch_size: int,
                    seed: int, mesh=None, progress: bool = False) -> tuple[float, float]:
    """(clean, PGD-num_steps) accuracy on a test subset, through the evaluation suite;
    ``progress`` shows its batch progress bars (the per-epoch test can take minutes)."""
    from fosc_jax.evaluation.suite import AttackSpec, Placement, Suite

    if len(y) == 0:
        return float("nan"), float("nan")
    placement = Placement(mesh if mesh is not None and mesh.size > 1 else None)
    suite = Suite(classifier, x_uint8, y, batch_size, seed=seed, progress=progress,
                  placement=placement)
    spec = AttackSpec(f"pgd{num_steps}", f"PGD-{num_steps}", num_steps=num_steps,
                      step_fraction=step_fraction)
    clean = float(np.mean(suite.predict() == suite.y))
    robust = float(np.mean(suite.attack(spec, eps)["correct"]))
    return clean, robust


@dataclasses.dataclass
class EpochLog:
    """Accumulates per-chunk device metrics of one epoch on the host."""
    sums: dict = dataclasses.field(default_factory=dict)
    steps: int = 0
    fosc: list = dataclasses.field(default_factory=list)
    num_steps: list = dataclasses.field(default_factory=list)
    adv_loss: list = dataclasses.field(default_factory=list)

    def add(self, metrics: dict) -> Optional[int]:
        """Accumulate a chunk; returns the index of its first non-finite step (None if all
        are finite). Collective in a multi-process run (arrays span processes)."""
        metrics = parallel.to_host(metrics)
        bad = np.flatnonzero(~np.asarray(metrics.get("finite", True)).reshape(-1))
        if bad.size:
            return int(bad[0])
        for name in ("train_loss", "train_adv_acc", "train_clean_acc", "attack_steps_mean"):
            self.sums[name] = self.sums.get(name, 0.0) + float(np.sum(metrics[name]))
        self.steps += len(metrics["train_loss"])
        self.fosc.append(np.asarray(metrics["fosc"]).reshape(-1))
        self.num_steps.append(np.asarray(metrics["num_steps"]).reshape(-1))
        self.adv_loss.append(np.asarray(metrics["adv_loss"]).reshape(-1))
        return None

    def means(self) -> dict:
        return {k: v / max(self.steps, 1) for k, v in self.sums.items()}


def fosc_summary(fosc: np.ndarray) -> dict:
    finite = fosc[np.isfinite(fosc)]
    if finite.size == 0:
        return {"fosc_mean": None, "fosc_p50": None, "fosc_p90": None}
    return {"fosc_mean": float(finite.mean()), "fosc_p50": float(np.percentile(finite, 50)),
            "fosc_p90": float(np.percentile(finite, 90))}


def progress(total: int, desc: str, quiet: bool):
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, disable=quiet, leave=False, dynamic_ncols=True)


def _fmt(v, spec=".4f"):
    return "-" if v is None else format(v, spec)


def summary_line(row: dict) -> str:
    sched = (f"c_t {_fmt(row['c_t'], '.3f')}" if row.get("c_t") is not None else
             f"k {row['curriculum_k']}" if row.get("curriculum_k") is not None else "")
    return (f"epoch {row['epoch']}: loss {row['train_loss']:.4f} "
            f"adv_acc {row['train_adv_acc']:.4f} clean_acc {row['train_clean_acc']:.4f} "
            f"{sched} steps {row['attack_steps_mean']:.2f} fosc_mean {_fmt(row['fosc_mean'])} | "
            f"test clean {row['test_clean_acc']:.4f} pgd10 {row['test_pgd10_acc']:.4f} | "
            f"{row['images_per_sec']:.0f} img/s {row['seconds']:.1f}s")
