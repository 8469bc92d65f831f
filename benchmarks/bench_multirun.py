"""K training runs in one compiled program (vmapped over a run axis) vs the same K steps one
after another, side by side in one process.

For each model and K, on synthetic data of the right shape (batch ``--batch`` per run):
  * ``vmapped``: one call of :class:`fosc_jax.training.group.RunGroup` steps all K runs;
  * ``sequential``: K calls of the single-run compiled step (``Trainer.step``, executor
    ``compiled``), one per run, each on its own state;
both with the same configs (seeds 0..K-1, defense ``--defense``: Standard PGD-K by default,
which every single-run executor runs as the same compiled program). Timing is that of
``bench_step.measure_many``: round robin, compile excluded (reported), median over repeats,
a device sync at the end of each repeat. ``speedup`` = sequential time / vmapped time (> 1:
one program pays). The learning rate is ``bench_step.BENCH_LR`` so every repeat does the
same work.

Examples::

    python benchmarks/bench_multirun.py --quick                          # smoke test
    python benchmarks/bench_multirun.py --json benchmarks/results/cpu_multirun.json
    python benchmarks/bench_multirun.py --ks 2,4,8,16,32 --json gpu_multirun.json  # on a GPU

On a machine with an accelerator JAX uses it by default; ``--platform cpu`` forces the CPU.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Optional, Sequence

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:  # allow `python benchmarks/bench_multirun.py` from anywhere
    sys.path.insert(0, _ROOT)


def _contenders(model: str, k: int, batch: int, defense: str, num_steps: int, seed: int):
    """(vmapped, sequential) step functions for K runs, and their build+compile-free setup."""
    import jax
    import numpy as np

    from benchmarks import bench_step
    from fosc_jax.training.group import RunGroup

    spec = bench_step.MODEL_SPECS[model]
    configs = []
    for i in range(k):
        c = bench_step.bench_config(model, batch, mode=defense, num_steps=num_steps)
        c.seed, c.executor = seed + i, "compiled"
        configs.append(c)
    group = RunGroup(configs, spec.shape, 10)
    fresh = [t.init_state(jax.random.PRNGKey(c.seed)) for t, c in zip(group.trainers, configs)]
    defense_states = [t.defense.init_state() for t in group.trainers]
    settings = group.settings_for_epoch(0, defense_states)
    single_settings = [t.settings_for_epoch(0, d) for t, d in zip(group.trainers, defense_states)]
    rng = np.random.default_rng(seed)
    x = jax.numpy.asarray(rng.integers(0, 256, (k, batch) + spec.shape, dtype=np.uint8))
    y = jax.numpy.asarray(rng.integers(0, 10, (k, batch)), jax.numpy.int32)
    box = {"group": group.stack(fresh),
           "singles": [t.init_state(jax.random.PRNGKey(c.seed))
                       for t, c in zip(group.trainers, configs)]}
    lead = group.lead   # one single-run program serves every run (same shapes and maths)

    def vmapped():
        box["group"], m = group.step(box["group"], x, y, settings)
        return m

    def sequential():
        out = []
        for i in range(k):
            box["singles"][i], m = lead.step(box["singles"][i], x[i], y[i], single_settings[i])
            out.append(m)
        return out

    def sync(out):
        jax.block_until_ready((out, box["group"], box["singles"]))

    return {"vmapped": (vmapped, sync), "sequential": (sequential, sync)}


def bench(models: Sequence[str], ks: Sequence[int], *, batch: int, defense: str,
          num_steps: int, repeats: int, min_time: float, seed: int = 0, log=print,
          save=lambda result: None) -> dict:
    """Rows of (model, K, vmapped and sequential seconds per K steps, img/s, speedup);
    ``save(result so far)`` after every row, so a long run that is stopped keeps its rows."""
    from benchmarks import bench_step

    load_before = _loadavg()
    rows = []

    def result() -> dict:
        meta = {"device": bench_step.jax_device_name(), "host_cpus": os.cpu_count(),
                "loadavg_1min_before": load_before, "loadavg_1min_after": _loadavg(),
                "repeats": repeats, "min_time": min_time, "command": " ".join(sys.argv)}
        return {"meta": meta, "rows": rows}
    for model in models:
        for k in ks:
            t0 = time.perf_counter()
            timings = bench_step.measure_many(
                _contenders(model, k, batch, defense, num_steps, seed), repeats=repeats,
                min_time=min_time)
            v, s = timings["vmapped"], timings["sequential"]
            row = {"model": model, "k": k, "batch": batch, "defense": defense,
                   "num_steps": num_steps, "vmapped_s": v.step_s, "sequential_s": s.step_s,
                   "vmapped_img_s": k * batch / v.step_s,
                   "sequential_img_s": k * batch / s.step_s,
                   "speedup": s.step_s / v.step_s, "vmapped_first_call_s": v.first_call_s,
                   "sequential_first_call_s": s.first_call_s,
                   "wall_s": time.perf_counter() - t0}
            rows.append(row)
            log(format_row(row))
            save(result())
    return result()


TABLE_HEADER = ("| model | K | vmapped s per K steps | sequential s per K steps | "
                "vmapped img/s | sequential img/s | speedup |\n|---|---|---|---|---|---|---|")


def format_row(row: dict) -> str:
    return (f"| {row['model']} | {row['k']} | {row['vmapped_s']:.3f} | {row['sequential_s']:.3f} "
            f"| {row['vmapped_img_s']:.0f} | {row['sequential_img_s']:.0f} | "
            f"{row['speedup']:.2f} |")


def _loadavg() -> Optional[float]:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="mnist_cnn,cifar_cnn")
    p.add_argument("--ks", default="2,4,8", help="numbers of runs in one program")
    p.add_argument("--batch", type=int, default=128, help="batch size of each run")
    p.add_argument("--defense", default="standard", help="standard | dynamic | ...")
    p.add_argument("--steps", type=int, default=10, help="attack steps K of PGD-K")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--min-time", type=float, default=2.0, help="seconds per repeat")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--platform", default=None, help="force a JAX platform, e.g. cpu")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: mnist_cnn, K = 2, batch 16, 2 attack steps, 1 repeat")
    p.add_argument("--json", default=None, help="write the result here (atomically)")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.ks, args.batch, args.steps = "mnist_cnn", "2", 16, 2
        args.repeats, args.min_time = 1, 0.0
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Parse flags, run, print a markdown table, optionally write JSON."""
    args = parse_args(argv)
    if args.platform:
        os.environ["JAX_PLATFORMS"] = args.platform
    import jax

    from fosc_jax import cpu_malloc
    from fosc_jax.rundir.integrity import atomic_write_text
    cpu_malloc.keep_freed_memory_on_cpu(jax.default_backend())  # as train.py does
    print(TABLE_HEADER, flush=True)

    def save(result: dict) -> None:
        if args.json:
            atomic_write_text(args.json, json.dumps(result, indent=1))
    result = bench([m for m in args.models.split(",") if m],
                   [int(k) for k in args.ks.split(",") if k], batch=args.batch,
                   defense=args.defense, num_steps=args.steps, repeats=args.repeats,
                   min_time=args.min_time, seed=args.seed,
                   log=lambda s: print(s, flush=True), save=save)
    meta = result["meta"]
    print(f"\n{meta['device']}; host load average (1 min): {meta['loadavg_1min_before']} "
          f"before, {meta['loadavg_1min_after']} after, on {meta['host_cpus']} CPUs")
    if args.json:
        print(f"wrote {len(result['rows'])} rows to {args.json}")
    return result


if __name__ == "__main__":
    main()
