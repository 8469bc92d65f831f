"""Check the accelerator before spending its time: devices seen, the in-graph early exit
equal to the unrolled loop on this device, one bfloat16 training step finite.

    python tools/device_check.py [--json FILE]

Exits 1 (and says which check failed) when a check fails, so a script stops before the
reproduction; writes the findings as JSON for the results.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _model_and_data(batch: int = 64):
    from fosc_jax.models import get_model
    model = get_model("mnist_cnn")
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((batch, 28, 28, 1), np.float32))
    y = jnp.asarray(rng.integers(0, 10, batch).astype(np.int32))
    variables = model.init(jax.random.key(0), x, train=False)
    return model, variables, x, y


def early_exit_agrees() -> dict:
    """Dynamic PGD with a while_loop over 3-step blocks against all 10 steps unrolled: the
    stopped examples are masked, so x_adv, FOSC and step counts must agree."""
    from fosc_jax.attacks import dynamic_pgd
    model, variables, x, y = _model_and_data()
    logits = lambda v: model.apply(variables, v, train=False)  # noqa: E731

    def attack(unroll, threshold):
        return jax.jit(lambda key: dynamic_pgd(logits, x, y, key, eps=0.3, step_size=0.075,
                                               num_steps=10, threshold=threshold,
                                               unroll=unroll))(jax.random.key(1))
    # The threshold at the median FOSC after the first step: about half the examples stop
    # there, the rest run on, so the exit is exercised both ways.
    threshold = float(jnp.median(attack(None, jnp.inf).fosc))
    a, b = attack(3, threshold), attack(None, threshold)
    dx = float(jnp.max(jnp.abs(a.x_adv - b.x_adv)))
    same_steps = bool(jnp.all(a.num_steps == b.num_steps))
    dfosc = float(jnp.max(jnp.abs(a.fosc - b.fosc)))
    return dict(ok=same_steps and dx <= 1e-5 and dfosc <= 1e-3, max_abs_x=dx,
                max_abs_fosc=dfosc, same_step_counts=same_steps,
                mean_steps=float(jnp.mean(a.num_steps)))


def bfloat16_step_finite() -> dict:
    """One Dynamic AT training step of the MNIST CNN in bfloat16 gives a finite loss."""
    from fosc_jax.config import mnist_config
    from fosc_jax.parallel import make_mesh
    from fosc_jax.training import Trainer
    c = mnist_config("dynamic")
    c.model.dtype = "bfloat16"
    c.executor = "compiled"
    trainer = Trainer(c, (28, 28, 1), 10, 4, make_mesh())
    state = trainer.init_state(jax.random.key(0))
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.integers(0, 256, (512, 28, 28, 1), np.uint8))
    y = jnp.asarray(rng.integers(0, 10, 512).astype(np.int32))
    idx = np.arange(128)[None]
    state, m = trainer.run_steps(state, x, y, idx, trainer.settings_for_epoch(0))
    loss = float(np.asarray(m["train_loss"]).reshape(-1)[0])
    return dict(ok=bool(np.isfinite(loss)), loss=loss)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", default=None, help="write the findings to this file")
    args = p.parse_args(argv)
    report = dict(backend=jax.default_backend(), devices=[str(d) for d in jax.devices()],
                  jax=jax.__version__)
    for name, check in (("early_exit", early_exit_agrees), ("bfloat16_step", bfloat16_step_finite)):
        try:
            report[name] = check()
        except Exception as err:  # a failed check is a finding, reported, not a traceback
            report[name] = dict(ok=False, error=f"{type(err).__name__}: {err}"[:300])
    failed = [k for k in ("early_exit", "bfloat16_step") if not report[k]["ok"]]
    print(json.dumps(report, indent=1))
    if args.json:
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(report, f, indent=1)
        os.replace(tmp, args.json)
    if failed:
        print(f"error: device check failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
