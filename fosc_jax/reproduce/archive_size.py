"""How large a reproduction's archive grows, known before any compute.

At any moment the archive (:mod:`fosc_jax.reproduce.archive`) holds each finished run's
exported model, every run's FOSC samples and metrics, the newest checkpoint of each run in
progress (weights, BatchNorm statistics, SGD momentum), and the evaluations, figures and
reports. Runs train one at a time, or in groups sharing one compiled program
(``--one-program``), so the archive is largest at the end or while a group trains (the
earlier runs exported, the group's checkpoints). The sizes are parameter counts of the
actual Flax models (``jax.eval_shape``: no compute) x 4 bytes x the gzip ratios measured on
real files by tools/archive_sizes.py; a command that would outgrow its volumes is refused
before it trains, instead of failing to pack after hours of work.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional, Sequence

from fosc_jax.reproduce.archive import mib

# Measured by tools/archive_sizes.py (docs/accelerators.md, "What fits"), rounded up: gzip
# keeps 92.7% of exported weights (trained MNIST CNNs, fresh CNN8 and ResNet-50), Orbax
# checkpoints pack to 93% of 4 bytes per float; a FOSC sample file (2,000 float32 FOSC and
# loss values, int32 step counts) to 59%. The projections come out 5-8% above the archives.
WEIGHTS_GZIP = 0.94
FOSC_GZIP = 0.60
FILE_OVERHEAD = 1024                   # tar header and npz metadata of one file
CHECKPOINT_OVERHEAD = 64 * 1024        # Orbax metadata, the manifest of checksums
REPORTS_BYTES = 3 * 2 ** 19            # evaluations, figures, RESULTS.md (1.2 MiB at cpu scale)


@dataclasses.dataclass(frozen=True)
class RunBytes:
    """A run's contributions to the archive, compressed: its exported model, its newest
    checkpoint while in progress, its FOSC samples and metrics once every epoch ran."""
    name: str
    export: int
    checkpoint: int
    fosc: int


@dataclasses.dataclass(frozen=True)
class Peak:
    """The archive at one moment of the training order (``index``: the group in progress,
    ``len(order)`` at the end): its size, the moment, the contributors (largest first)."""
    size: int
    when: str
    parts: list[tuple[str, int]]
    index: int


@functools.lru_cache(maxsize=None)
def weight_counts(model: str, data: str) -> tuple[int, int]:
    """(parameters, BatchNorm statistics) of model ``model`` on data set ``data``."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from fosc_jax.data import KNOWN_DATASETS
    from fosc_jax.models import get_model
    classes, shape = KNOWN_DATASETS[data]
    net = get_model(model, num_classes=classes)
    tree = jax.eval_shape(lambda: net.init(jax.random.PRNGKey(0), jnp.zeros((1,) + shape),
                                           train=False))
    count = lambda t: sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(t))  # noqa: E731
    return count(tree["params"]), count(tree.get("batch_stats", {}))


def run_bytes(name: str, config) -> RunBytes:
    """The archive bytes of the run ``name`` trained with ``config``."""
    params, stats = weight_counts(config.model.name, config.data.name)
    momentum = params if config.optim.momentum else 0
    per_epoch = 12 * int(config.fosc_sample_size) * FOSC_GZIP + 2 * FILE_OVERHEAD
    return RunBytes(name, export=int(4 * (params + stats) * WEIGHTS_GZIP) + FILE_OVERHEAD,
                    checkpoint=int(4 * (params + stats + momentum) * WEIGHTS_GZIP)
                    + CHECKPOINT_OVERHEAD,
                    fosc=int(int(config.num_epochs) * per_epoch))


def _runs(what: str, runs: Sequence[RunBytes]) -> str:
    if len(runs) == 1:
        return f"{what} of {runs[0].name}"
    return f"{what}s of {len(runs)} runs"


def moments(order: Sequence[Sequence[RunBytes]]) -> list[Peak]:
    """The archive while each group of the training ``order`` trains (groups one after
    another; a group's checkpoints coexist while it trains), then at the end."""
    found, done = [], []
    for index, group in enumerate(list(order) + [[]]):
        every = done + list(group)
        parts = [(_runs("checkpoint", group) + " in progress", sum(r.checkpoint for r in group)),
                 (_runs("exported model", done), sum(r.export for r in done)),
                 (_runs("FOSC sample", every), sum(r.fosc for r in every)),
                 ("evaluations, figures and reports", REPORTS_BYTES)]
        parts = sorted([p for p in parts if p[1] > 0], key=lambda p: -p[1])
        when = (f"while {group[0].name}" + (f" and {len(group) - 1} more runs train together"
                                            if len(group) > 1 else " trains")
                if group else "at the end")
        found.append(Peak(sum(b for _, b in parts), when, parts, index))
        done = every
    return found


def peak(order: Sequence[Sequence[RunBytes]]) -> Peak:
    """The largest archive over the training ``order``."""
    return max(moments(order), key=lambda m: m.size)


def training_order(runs, scale, source: str, out: str, together: bool) -> list[list]:
    """The runs in the order the reproduction trains them: the groups that share one
    program first (when ``together``), then the others one by one."""
    from fosc_jax.reproduce import pipeline
    groups = pipeline.shared_program_groups(runs, scale, source, out) if together else []
    grouped = {r.name for g in groups for r in g}
    return groups + [[r] for r in runs if r.name not in grouped]


def volumes_needed(size: int, volume_bytes: int) -> int:
    """Volumes of ``volume_bytes`` that ``size`` bytes of archive need (the first volume
    also holds the small manifest)."""
    return max(1, math.ceil((size + 4096) / volume_bytes))


def refusal(runs, scale, source: str, out: str, one_program: str, max_volumes: int,
            volume_bytes: int) -> Optional[str]:
    """One line when the archive of this reproduction would need more than ``max_volumes``
    volumes at its largest (naming the largest contributors), else None."""
    import jax

    from fosc_jax import parallel
    from fosc_jax.reproduce.pipeline import experiment_of
    from fosc_jax.training.multirun import pays_on
    parallel.maybe_initialize_distributed()   # before the first use of a JAX backend
    together = one_program == "yes" or (one_program == "auto"
                                        and pays_on(jax.default_backend()))
    config = experiment_of(runs).config
    top = {t: peak([[run_bytes(r.name, config(r, scale, source)) for r in group]
                    for group in training_order(runs, scale, source, out, t)])
           for t in {together, False}}
    need = volumes_needed(top[together].size, volume_bytes)
    if need <= max_volumes:
        return None
    named = ", ".join(f"{label} ({mib(b)})" for label, b in top[together].parts[:3])
    alone = volumes_needed(top[False].size, volume_bytes)
    hint = (f"--one-program no (about {mib(top[False].size)}, {alone} volumes), "
            if alone <= max_volumes else "")
    return (f"--archive-volumes: the archive would grow to about {mib(top[together].size)} "
            f"{top[together].when}, {need} volumes of {mib(volume_bytes)}, over the "
            f"{max_volumes} allowed; largest contributors: {named}. Allow {need} volumes "
            f"(--archive-volumes {need}), "
            f"{hint}pack fewer --runs per archive, or keep --out on a persistent disk and "
            "drop --archive")
