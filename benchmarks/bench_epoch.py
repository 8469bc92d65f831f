"""Wall time of whole training epochs on real MNIST: Dynamic at fixed c_t against Standard.

Uses the training loop's own ``Trainer.run_steps`` (batches gathered on device from a
per-epoch permutation, metrics fetched at every chunk boundary), without the per-epoch
evaluation and checkpointing; ``--loop`` picks one compiled call per batch (the default of
``train_and_evaluate``) or a ``lax.scan`` over each chunk (``steps_per_call``; the host exit
variants still run a Dynamic step per call). Every mode starts from the same weights
(fresh, or after --pretrain-epochs
untimed Standard epochs); compilation happens in a warm-up on a throwaway state and is
excluded (reported separately).

    python benchmarks/bench_epoch.py --limit 2048            # CPU: first 2048 training images
    python benchmarks/bench_epoch.py --epochs 2 --json e.json   # full MNIST (GPU)

Data: --data DIR (IDX files), else $FOSC_JAX_MNIST_DIR, else ../shared/data/mnist next to
the repository.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks.bench_step import _loadavg, bench_config, jax_device_name  # noqa: E402

DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.25, 0.0)
# How a Dynamic step exits early: "host:k" checks on the host after the first step and every
# k steps (XLA:CPU, k = 3), "host:k+compact" also shrinks the batch to its active examples at
# those checks (needs --bn-mode eval), "device:k" runs a while_loop over k-step blocks
# (accelerator default), "none" runs all K steps unrolled (stopped examples masked, no exit),
# "default" is what ``config.executor = "auto"`` picks for this backend and config.
DEFAULT_EXITS: tuple[str, ...] = ("default",)


def parse_exit(text: str) -> tuple[Optional[str], int, Optional[bool]]:
    """"host:3+compact" -> ("host", 3, True); "host:3" -> ("host", 3, False); "none" ->
    (None, 0, False); "default" -> (None, 3, None): the Trainer's own choices."""
    if text == "none":
        return None, 0, False
    if text == "default":
        return None, 3, None
    body, plus, extra = text.partition("+")
    kind, _, block = body.partition(":")
    if (kind not in ("host", "device") or not block.isdigit() or int(block) < 1
            or (plus and (extra != "compact" or kind != "host"))):
        raise ValueError(f"exit variant must be 'default', 'none', 'host:K', 'host:K+compact' "
                         f"or 'device:K', got {text!r}.")
    return kind, int(block), bool(plus)


def default_data_dir() -> str:
    """$FOSC_JAX_MNIST_DIR, else ../shared/data/mnist beside the repository root."""
    return os.environ.get("FOSC_JAX_MNIST_DIR") or os.path.normpath(
        os.path.join(_ROOT, "..", "shared", "data", "mnist"))


def _chunks(steps: int, chunk: int) -> list[tuple[int, int]]:
    return [(s, min(s + chunk, steps)) for s in range(0, steps, chunk)]


def _compile_compaction(runner: Any, state: Any, x: jax.Array, y: jax.Array,
                        settings: Any) -> None:
    """Compile the programs of every smaller batch size ``runner`` may compact to (they are
    traced on first use, which a timed epoch would otherwise pay)."""
    ex = runner.executor
    if len(getattr(ex, "sizes", ())) < 2:
        return
    x, y, key, clean, s = ex.begin(state, x, y, settings)
    for size in ex.sizes[1:]:
        idx, part = ex.gather(state, x, y, key, clean, s, settings, size)
        part = ex.part_block_steps(state, key, part, settings)
        jax.block_until_ready(ex.scatter(s, idx, part))


def exit_executor(runner: Any, text: str) -> Optional[Any]:
    """The executor of exit variant ``text`` for ``runner`` (None: the runner's own, as
    ``config.executor = "auto"`` picks it)."""
    from fosc_jax.training import executors

    kind, block, compact = parse_exit(text)
    if kind is None:
        return None
    if kind == "device":
        return executors.Compiled(runner, block)
    return executors.HostChecked(runner, block,
                                 compact_min=executors.COMPACT_MIN if compact else None)


def bench_epochs(data_dir: str, *, limit: int, batch: int, epochs: int,
                 thresholds: Sequence[float], num_steps: int, dtype: str, seed: int,
                 loop: str = "step", lr: float = 0.01, pretrain_epochs: int = 0,
                 exits: Sequence[str] = DEFAULT_EXITS, rounds: int = 1,
                 bn_mode: str = "eval", mallocs: Sequence[str] = ("keep",),
                 log: Callable[[str], None] = print) -> dict:
    """Time ``epochs`` epochs for Standard and for Dynamic at each c_t; {"meta", "rows"}.

    ``loop="step"``: one compiled call per batch (``steps_per_call=1``, the training loop's
    default); ``"chunk"``: a ``lax.scan`` over a whole logging chunk per call
    (``steps_per_call=log_every``). Both go through ``Trainer.run_steps``.
    Every mode starts from the same state: fresh weights after ``pretrain_epochs`` untimed
    epochs of Standard AT (FOSC is large on an untrained model, so Dynamic saves little in the
    very first epoch). Each Dynamic c_t is timed with every early-exit variant of ``exits``.
    With ``rounds`` > 1 every mode is timed again in each round, in the same order, each time
    from the same start (so the machine's drift hits all modes alike); rows carry ``round``.
    """
    from fosc_jax import cpu_malloc, defenses, parallel, training
    from fosc_jax.data import epoch_permutation, load_dataset

    if not set(mallocs) <= {"keep", "default"}:  # before minutes of warm-up, not after
        raise ValueError(f"malloc settings must be 'keep' or 'default', got {list(mallocs)}.")
    load_before = _loadavg()
    ds = load_dataset(f"files:{data_dir}", "mnist")
    x_np, y_np = ds.x_train, ds.y_train
    if limit:
        x_np, y_np = x_np[:limit], y_np[:limit]
    n = int(x_np.shape[0])
    if n < batch:
        raise SystemExit(f"--limit {limit} leaves {n} images, fewer than one batch of {batch}.")
    steps_per_epoch = n // batch
    config = bench_config("mnist_cnn", batch, mode="dynamic", num_steps=num_steps, dtype=dtype)
    config.attack.bn_mode = bn_mode
    config.data.source = f"files:{data_dir}"
    config.optim.lr = lr          # real training here (bench_config's default lr is ~0)
    config.seed = seed
    chunk = max(1, min(int(config.log_every), steps_per_epoch))
    if loop not in ("chunk", "step"):
        raise ValueError(f"loop must be 'chunk' or 'step', got {loop!r}.")
    config.steps_per_call = chunk if loop == "chunk" else 1
    trainer = training.Trainer(config, input_shape=ds.image_shape, num_classes=ds.num_classes,
                               steps_per_epoch=steps_per_epoch)
    x_train, y_train = parallel.replicate((jnp.asarray(x_np), jnp.asarray(y_np, jnp.int32)),
                                          trainer.mesh)   # as train_and_evaluate does
    standard_config = bench_config("mnist_cnn", batch, mode="standard", num_steps=num_steps,
                                   dtype=dtype)
    standard_config.attack.bn_mode = bn_mode
    standard = defenses.settings_for_epoch(standard_config, 0, batch)
    dynamic = trainer.settings_for_epoch(0)

    def run_chunk(state: Any, idx: jax.Array, settings: Any,
                  runner: Any = trainer) -> tuple[Any, dict]:
        return runner.run_steps(state, x_train, y_train, idx, settings)

    variants = {}
    for text in exits:
        runner = trainer if text == "none" else training.Trainer(
            config, input_shape=ds.image_shape, num_classes=ds.num_classes,
            steps_per_epoch=steps_per_epoch, mesh=trainer.mesh)
        runner.executor = exit_executor(runner, text) or runner.executor
        variants[text] = (runner, text != "none")

    # Warm-up: compile every chunk length the epoch uses, on a throwaway state.
    t0 = time.perf_counter()
    state = trainer.init_state(jax.random.key(seed))
    idx = epoch_permutation(jax.random.key(seed), n, batch)
    for length in sorted({b - a for a, b in _chunks(steps_per_epoch, chunk)}):
        state, metrics = run_chunk(state, idx[:length], standard)
        jax.block_until_ready((state, metrics))
        for runner, early in variants.values():  # every exit program (-inf: all blocks run)
            warm = dynamic.replace(threshold=jnp.float32(-np.inf), early_exit=early)
            state, metrics = run_chunk(state, idx[:length], warm, runner)
            jax.block_until_ready((state, metrics))
    for runner, early in variants.values():    # and every size a batch may shrink to
        _compile_compaction(runner, state, x_train[idx[0]], y_train[idx[0]],
                            dynamic.replace(early_exit=early))
    compile_s = time.perf_counter() - t0
    log(f"warm-up (init + compile, {steps_per_epoch} steps/epoch, chunk {chunk}): "
        f"{compile_s:.1f} s")

    # Shared starting point: fresh weights, optionally after untimed Standard AT epochs.
    start = trainer.init_state(jax.random.key(seed))
    for epoch in range(pretrain_epochs):
        perm = epoch_permutation(jax.random.fold_in(jax.random.key(seed + 1), epoch), n, batch)
        for a, b in _chunks(steps_per_epoch, chunk):
            start, _ = run_chunk(start, perm[a:b], standard)
    jax.block_until_ready(start)
    if pretrain_epochs:
        log(f"pre-trained {pretrain_epochs} Standard epoch(s) (untimed)")

    modes: list[tuple[str, Optional[float], str, str]] = []
    for malloc in mallocs:
        modes += [("standard", None, "-", malloc)]
        modes += [("dynamic", float(c), e, malloc) for c in thresholds for e in variants]
    rows, standard_s = [], {}
    def time_mode(round_: int, mode: str, c_t: Optional[float], exit_: str,
                  malloc: str) -> None:
        """``epochs`` timed epochs of one mode from the shared start; appends rows."""
        if not cpu_malloc.configure(keep=malloc == "keep") and malloc == "keep":
            log("note: this C library has no mallopt; 'keep' runs glibc-free defaults")
        runner = trainer if c_t is None else variants[exit_][0]
        settings = standard if c_t is None else dynamic.replace(
            threshold=jnp.float32(c_t), early_exit=variants[exit_][1])
        state = jax.tree_util.tree_map(jnp.copy, start)   # the step donates its state
        jax.block_until_ready(state)
        for epoch in range(epochs):
            perm = epoch_permutation(jax.random.fold_in(jax.random.key(seed), epoch), n, batch)
            steps_mean, iterations, losses = [], [], []
            t0 = time.perf_counter()
            for a, b in _chunks(steps_per_epoch, chunk):
                state, metrics = run_chunk(state, perm[a:b], settings, runner)
                m = jax.device_get({k: metrics[k] for k in
                                    ("attack_steps_mean", "num_steps", "train_loss")})
                steps_mean.extend(np.asarray(m["attack_steps_mean"]).tolist())
                iterations.extend(np.asarray(m["num_steps"]).max(axis=1).tolist())
                losses.extend(np.asarray(m["train_loss"]).tolist())
            jax.block_until_ready(state)
            seconds = time.perf_counter() - t0
            if c_t is None:
                standard_s[(round_, epoch, malloc)] = seconds
            row = dict(mode=mode, c_t=c_t, exit=exit_, malloc=malloc, round=round_,
                       epoch=epoch,
                       seconds=seconds, images=steps_per_epoch * batch,
                       img_s=steps_per_epoch * batch / seconds,
                       attack_steps_mean=float(np.mean(steps_mean)),
                       attack_iterations_mean=float(np.mean(iterations)),
                       train_loss=float(np.mean(losses)),
                       speedup_vs_standard=(standard_s.get((round_, epoch, malloc),
                                                           float("nan")) / seconds),
                       batch=batch, num_steps=num_steps, dtype=dtype, loop=loop)
            rows.append(row)
            log(format_row(row))

    for round_ in range(rounds):
        for mode in modes:
            time_mode(round_, *mode)
    meta = dict(device=jax_device_name(), jax_version=jax.__version__, data_dir=data_dir,
                train_images=n, steps_per_epoch=steps_per_epoch, chunk=chunk,
                warmup_compile_s=compile_s, seed=seed, loop=loop, lr=lr,
                pretrain_epochs=pretrain_epochs, exits=list(exits), rounds=rounds,
                bn_mode=bn_mode, mallocs=list(mallocs),
                compact_sizes={e: list(getattr(r.executor, "sizes", [batch])) if early
                               else [batch]
                               for e, (r, early) in variants.items()},
                host_cpus=os.cpu_count(),
                loadavg_1min_before=load_before, loadavg_1min_after=_loadavg())
    return {"meta": meta, "rows": rows}


TABLE_HEADER = ("| round | mode | c_t | exit | malloc | epoch | seconds | img/s | "
                "mean attack steps | mean loop iterations | speedup vs Standard |\n"
                "|---|---|---|---|---|---|---|---|---|---|---|")


def format_row(r: dict) -> str:
    """One markdown table line."""
    c_t = "-" if r["c_t"] is None else f"{r['c_t']:g}"
    return (f"| {r.get('round', 0)} | {r['mode']} | {c_t} | {r.get('exit', '-')} | "
            f"{r.get('malloc', '-')} | {r['epoch']} | {r['seconds']:.2f} | {r['img_s']:.1f} | "
            f"{r['attack_steps_mean']:.2f} | {r['attack_iterations_mean']:.2f} | "
            f"{r['speedup_vs_standard']:.2f}x |")


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Parse flags, run, print a markdown table, optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=default_data_dir(), help="folder with the MNIST IDX files")
    p.add_argument("--limit", type=int, default=0, help="use the first N training images (0: all)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--thresholds", default=",".join(map(str, DEFAULT_THRESHOLDS)))
    p.add_argument("--steps", type=int, default=10, help="PGD steps K")
    p.add_argument("--pretrain-epochs", type=int, default=0,
                   help="untimed Standard AT epochs every mode starts from")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate (paper: 0.01)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--loop", default="step", choices=("chunk", "step"),
                   help="step: one compiled call per batch (training's default); "
                        "chunk: lax.scan over log_every steps per call (steps_per_call)")
    p.add_argument("--exits", default=",".join(DEFAULT_EXITS),
                   help="Dynamic early-exit variants to time, comma-separated: default, none "
                        "(all K steps unrolled), host:K, device:K (check every K steps), "
                        "host:K+compact (shrink the batch to its active examples)")
    p.add_argument("--bn-mode", default="eval", choices=("eval", "train"),
                   help="BatchNorm while attacking (the MNIST configs: eval)")
    p.add_argument("--malloc", default="keep",
                   help="allocator settings to time, comma-separated: keep (freed memory stays "
                        "mapped, the trainer's CPU default), default (glibc's)")
    p.add_argument("--rounds", type=int, default=1,
                   help="time every mode this many times, round-robin, from the same start")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if not os.path.isdir(args.data):
        raise SystemExit(f"MNIST folder {args.data!r} not found; pass --data DIR or set "
                         "FOSC_JAX_MNIST_DIR.")
    result = bench_epochs(args.data, limit=args.limit, batch=args.batch, epochs=args.epochs,
                          thresholds=[float(c) for c in args.thresholds.split(",") if c],
                          num_steps=args.steps, dtype=args.dtype, seed=args.seed,
                          loop=args.loop, lr=args.lr, rounds=args.rounds,
                          bn_mode=args.bn_mode,
                          mallocs=[m for m in args.malloc.split(",") if m],
                          exits=[e for e in args.exits.split(",") if e],
                          pretrain_epochs=args.pretrain_epochs, log=lambda s: print(s, flush=True))
    meta = result["meta"]
    print(f"\n{meta['device']}, jax {meta['jax_version']}; {meta['train_images']} MNIST training "
          f"images, {meta['steps_per_epoch']} steps/epoch, loop={meta['loop']}; "
          f"warm-up {meta['warmup_compile_s']:.1f} s")
    print(TABLE_HEADER)
    for row in result["rows"]:
        print(format_row(row))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return result


if __name__ == "__main__":
    main()
