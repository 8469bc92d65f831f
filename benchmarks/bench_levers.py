"""Each speed lever of the training step on its own, side by side in one run (round-robin).

Variants of one Standard PGD-10 step (attack + SGD update, batch 128, fresh weights held
fixed with a negligible learning rate) and of a Dynamic step at c_t = inf:

  before         nn.max_pool (select-and-scatter backward) + the attack in a while_loop
                 (one step per iteration): the code before these levers
  pool           2x2 max-pool as reshape + max, attack still in the while_loop
  unroll         nn.max_pool, attack steps unrolled at trace time
  pool+unroll    both (the default)
  dynamic/device c_t = inf, while_loop over blocks with in-graph exit (accelerator default)
  dynamic/host   c_t = inf, exit checked on the host between unrolled blocks (CPU default)
  torch fp32     the PyTorch eager reference step (benchmarks/torch_reference.py)

Every variant is compiled first (compile seconds reported), then each repeat times every
variant in turn, so load drifts hit all alike. ``ratio`` columns divide by "before" and by
torch fp32 in the same run.

    python benchmarks/bench_levers.py --models mnist_cnn,cifar_cnn --repeats 5 --json levers.json
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_step as bs  # noqa: E402

VARIANTS = ("before", "pool", "unroll", "pool+unroll", "dynamic/device", "dynamic/host")


@contextlib.contextmanager
def select_and_scatter_pool(enabled: bool):
    """Trace the CNNs with nn.max_pool (the pre-lever pooling) while enabled."""
    from fosc_jax.models import cifar_cnn, mnist_cnn
    saved = mnist_cnn.max_pool_2x2, cifar_cnn.max_pool_2x2
    if enabled:
        old = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))  # noqa: E731
        mnist_cnn.max_pool_2x2 = cifar_cnn.max_pool_2x2 = old
    try:
        yield
    finally:
        mnist_cnn.max_pool_2x2, cifar_cnn.max_pool_2x2 = saved


def make_variant(model: str, batch: int, variant: str, x, y, num_steps: int = 10):
    """(step thunk, sync, compile seconds) for one variant, compiled before returning."""
    from fosc_jax import defenses, training
    cfg = bs.bench_config(model, batch, mode="dynamic", num_steps=num_steps)
    loop_variant = variant in ("before", "pool")
    from fosc_jax.training import executors
    trainer = training.Trainer(cfg, bs.MODEL_SPECS[model].shape, 10)
    block = 1 if loop_variant else executors.EXIT_BLOCK
    trainer.executor = (executors.HostChecked(trainer, block) if variant == "dynamic/host"
                        else executors.Compiled(trainer, block))
    state = trainer.init_state(jax.random.key(0))
    std = defenses.settings_for_epoch(
        bs.bench_config(model, batch, mode="standard", num_steps=num_steps), 0, batch)
    if loop_variant:       # the old loop: a while_loop of single steps, no exit possible
        settings = std.replace(early_exit=True)
    elif variant.startswith("dynamic"):
        settings = trainer.settings_for_epoch(0).replace(threshold=jnp.float32(np.inf))
    else:
        settings = std
    holder = {"state": state}

    def call():
        holder["state"], m = trainer.step(holder["state"], x, y, settings)
        return m

    with select_and_scatter_pool(variant in ("before", "unroll")):
        t0 = time.perf_counter()
        jax.block_until_ready(call())
        compile_s = time.perf_counter() - t0
    return call, lambda m: jax.block_until_ready((holder["state"], m)), compile_s


def run(models: Sequence[str], batch: int, repeats: int, min_time: float,
        torch_variant: Optional[str]) -> list[dict]:
    tr = bs.load_torch() if torch_variant else None
    rows = []
    for model in models:
        x_np, y_np = bs._batch(model, batch, 0)
        x, y = jnp.asarray(x_np), jnp.asarray(y_np)
        contenders, compile_s = {}, {}
        for v in VARIANTS:
            call, sync, compile_s[v] = make_variant(model, batch, v, x, y)
            contenders[v] = (call, sync)
        if tr is not None:
            ref, xt, yt = bs.make_torch_step(tr, model, torch_variant, x_np, y_np,
                                             num_steps=10, device="cpu")
            contenders["torch fp32"] = (lambda: ref.step(xt, yt, None), lambda o: None)
        timings = bs.measure_many(contenders, repeats=repeats, min_time=min_time)
        base = timings["before"].step_s
        torch_s = timings["torch fp32"].step_s if "torch fp32" in timings else None
        for name, t in timings.items():
            rows.append(dict(model=model, batch=batch, variant=name, step_ms=1e3 * t.step_s,
                             img_s=batch / t.step_s, compile_s=compile_s.get(name),
                             vs_before=base / t.step_s,
                             vs_torch=(torch_s / t.step_s) if torch_s else None,
                             repeats_ms=[1e3 * r for r in t.repeat_s]))
            print(f"{model} {name:15s} {1e3 * t.step_s:8.1f} ms  {batch / t.step_s:7.1f} img/s  "
                  f"x{base / t.step_s:.2f} vs before"
                  + (f"  x{torch_s / t.step_s:.2f} vs torch" if torch_s else ""), flush=True)
    return rows


def markdown(rows: Sequence[dict]) -> str:
    """The lever table for BENCHMARKS.md."""
    out = ["| model | variant | step ms | img/s | compile s | x vs before | x vs torch fp32 |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        comp = "-" if r["compile_s"] is None else f"{r['compile_s']:.1f}"
        vt = "-" if r["vs_torch"] is None else f"{r['vs_torch']:.2f}"
        out.append(f"| {r['model']} | {r['variant']} | {r['step_ms']:.0f} | {r['img_s']:.1f} | "
                   f"{comp} | {r['vs_before']:.2f} | {vt} |")
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="mnist_cnn,cifar_cnn")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--min-time", type=float, default=0.0)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    from fosc_jax import cpu_malloc
    cpu_malloc.keep_freed_memory_on_cpu(jax.default_backend())  # as train.py does
    rows = run([m for m in a.models.split(",") if m], a.batch, a.repeats, a.min_time,
               None if a.no_torch else "fp32")
    print(markdown(rows))
    if a.json:
        meta = dict(device=bs.jax_device_name(), jax=jax.__version__, loadavg=bs._loadavg())
        with open(a.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
