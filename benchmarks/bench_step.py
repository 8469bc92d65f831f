"""Images/s of one adversarial training step (attack + SGD update): fosc_jax vs PyTorch eager.

For every model and batch size it times, on synthetic data of the right shape:
  * Standard: PGD-K for every example (K = 10 by default);
  * Dynamic at fixed thresholds c_t (default 0.5, 0.1, 0, inf): each example stops once its
    FOSC is <= c_t (mean attack steps reported; inf = everyone stops after the first step);
for our JAX step (``fosc_jax.training.Trainer.train_step``, via ``make_jax_step``) and the
PyTorch eager reference (``torch_reference.py``) in float32 and in bfloat16 autocast +
channels_last. ``ratio`` = ours / the faster PyTorch variant (> 1: ours is faster).

Method: the first call (compile for JAX) is excluded and reported as ``compile_s``; each repeat
times several back-to-back steps and ends with a device sync (``block_until_ready`` /
``torch.cuda.synchronize``); the median over repeats is reported. Achieved FLOP/s use the
model FLOPs of ``flops.py`` and are compared with the device's peak, measured in the same run
with a large matmul in JAX (float32 with default precision, and bfloat16). The learning rate
is ``BENCH_LR`` (negligible) so the weights stay at their initialisation and every repeat
does the same work; the update itself still runs in full.

Examples::

    python benchmarks/bench_step.py --quick --json /tmp/quick.json      # smoke test
    python benchmarks/bench_step.py --models mnist_cnn,cifar_cnn --batches 128 --repeats 3
    python benchmarks/bench_step.py --dtype bfloat16 --json gpu.json      # all models, GPU

Runs without torch installed (torch columns are then empty and the output says so).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:  # allow `python benchmarks/bench_step.py` from anywhere
    sys.path.insert(0, _ROOT)

# JAX must not grab 75% of GPU memory up front: PyTorch runs in the same process.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from benchmarks import flops as flops_lib  # noqa: E402


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What a benchmarked model needs: data set name, image shape (H, W, C), attack eps."""

    dataset: str
    shape: tuple[int, int, int]
    eps: float


MODEL_SPECS: dict[str, ModelSpec] = {
    "mnist_cnn": ModelSpec("mnist", (28, 28, 1), 0.3),
    "mnist_cnn_valid": ModelSpec("mnist", (28, 28, 1), 0.3),
    "cifar_cnn": ModelSpec("cifar10", (32, 32, 3), 8 / 255),
    "wrn34_10": ModelSpec("cifar10", (32, 32, 3), 8 / 255),
    "wrn16_1": ModelSpec("cifar10", (32, 32, 3), 8 / 255),
}
DEFAULT_MODELS: tuple[str, ...] = ("mnist_cnn", "cifar_cnn", "wrn34_10")
DEFAULT_BATCHES: tuple[int, ...] = (128, 512)
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.5, 0.1, 0.0, math.inf)
# The update runs in full, but with a negligible learning rate the weights stay at their
# initial values, so every repeat times the same workload. Training on one synthetic batch
# with a real lr collapses the model within a few steps (constant logits, input gradients
# ~0, FOSC ~0), which would make the Dynamic rows measure a degenerate network.
BENCH_LR: float = 1e-9
TORCH_VARIANTS: tuple[str, ...] = ("fp32", "bf16_cl")
NO_TORCH_NOTE = ("torch is not installed: the PyTorch columns are empty "
                 "(pip install torch to fill them).")


# --------------------------------------------------------------------------- JAX side (seam)

@dataclasses.dataclass
class JaxStep:
    """Our training step bound to a state: ``__call__(x, y, c_t)`` runs one step in place.

    ``c_t=None`` is Standard (PGD-K), a number is Dynamic at that fixed threshold. Both use the
    same ``Trainer.step`` (through the executor ``config.executor`` picks; every defense is the
    masked PGD loop with different settings), so one compilation serves all rows of a model
    and batch size. ``state`` is
    donated by the step, so it is replaced after every call.
    """

    step: Callable[..., tuple[Any, dict]]
    state: Any
    standard: Any        # AttackSettings of defense "standard", epoch 0
    dynamic: Any         # AttackSettings of defense "dynamic", epoch 0 (threshold replaced)
    init_s: float        # seconds spent building the Trainer and its initial state

    def settings_for(self, c_t: Optional[float]) -> Any:
        """Standard settings, or Dynamic with ``threshold = c_t``."""
        if c_t is None:
            return self.standard
        return self.dynamic.replace(threshold=jnp.float32(c_t))

    def __call__(self, x: jax.Array, y: jax.Array, c_t: Optional[float]) -> dict:
        self.state, metrics = self.step(self.state, x, y, self.settings_for(c_t))
        return metrics

    def sync(self, metrics: Any) -> None:
        """Block until the last step (and hence all earlier ones) finished."""
        jax.block_until_ready((self.state, metrics))


def bench_config(model_name: str, batch: int, *, mode: str, num_steps: int = 10,
                 dtype: str = "float32") -> Any:
    """``base_config()`` set up for one benchmark setting (synthetic data, no augmentation)."""
    from fosc_jax.config import base_config

    spec = MODEL_SPECS[model_name]
    config = base_config()
    config.name = f"bench_{model_name}_{mode}"
    config.data.name = spec.dataset
    config.data.source = "bundled"       # never read: the benchmark feeds synthetic batches
    config.model.name = model_name
    config.model.dtype = dtype
    config.batch_size = batch
    config.attack.eps = spec.eps
    config.attack.num_steps = num_steps
    config.defense.name = mode
    config.optim.lr = BENCH_LR
    config.quiet = True
    return config


def make_jax_step(model_name: str, batch: int, *, num_steps: int = 10,
                  dtype: str = "float32", seed: int = 0) -> JaxStep:
    """The seam to our code: ``fosc_jax.training.Trainer.step`` for one model/batch.

    Standard settings come from ``fosc_jax.defenses.settings_for_epoch`` for a "standard"
    config, Dynamic ones from ``trainer.settings_for_epoch(0)`` with the threshold replaced.
    """
    from fosc_jax import defenses, training

    t0 = time.perf_counter()
    config = bench_config(model_name, batch, mode="dynamic", num_steps=num_steps, dtype=dtype)
    trainer = training.Trainer(config, input_shape=MODEL_SPECS[model_name].shape, num_classes=10)
    state = trainer.init_state(jax.random.key(seed))
    standard = defenses.settings_for_epoch(
        bench_config(model_name, batch, mode="standard", num_steps=num_steps, dtype=dtype),
        0, batch)
    jax.block_until_ready(state)
    return JaxStep(trainer.step, state, standard, trainer.settings_for_epoch(0),
                   time.perf_counter() - t0)


# --------------------------------------------------------------------------- timing helpers

@dataclasses.dataclass
class Timing:
    """Wall-clock result of one measured setting (seconds)."""

    first_call_s: float      # warm-up call: compile (JAX) + one step
    step_s: float            # median over repeats of the mean step time
    repeat_s: list[float]    # per-repeat mean step time
    outputs: list[Any]       # every timed step's output (metrics), fetched after timing


Contender = tuple[Callable[[], Any], Callable[[Any], None]]   # (one step, sync on its output)


def measure_many(contenders: dict[str, Contender], *, repeats: int, min_time: float,
                 max_iters: int = 200) -> dict[str, Timing]:
    """Time several step functions round-robin: each repeat runs every contender in turn.

    Each contender is warmed up once (excluded), then per repeat runs back-to-back steps for
    >= ``min_time`` s (one step if 0) and syncs. Alternating within every repeat means slow
    drifts in host load (shared CPUs) hit all contenders alike.
    """
    first, iters = {}, {}
    for name, (call, sync) in contenders.items():
        t0 = time.perf_counter()
        out = call()
        sync(out)
        first[name] = time.perf_counter() - t0
        iters[name] = 1
        if min_time > 0:
            t0 = time.perf_counter()
            out = call()
            sync(out)
            estimate = time.perf_counter() - t0
            iters[name] = max(1, min(max_iters, math.ceil(min_time / max(estimate, 1e-6))))
    times: dict[str, list[float]] = {name: [] for name in contenders}
    outputs: dict[str, list[Any]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, (call, sync) in contenders.items():
            t0 = time.perf_counter()
            for _ in range(iters[name]):
                out = call()
                outputs[name].append(out)
            sync(out)
            times[name].append((time.perf_counter() - t0) / iters[name])
    return {name: Timing(first[name], statistics.median(times[name]), times[name], outputs[name])
            for name in contenders}


def measure(call: Callable[[], Any], sync: Callable[[Any], None], *, repeats: int,
            min_time: float) -> Timing:
    """``measure_many`` for a single step function."""
    return measure_many({"only": (call, sync)}, repeats=repeats, min_time=min_time)["only"]


def measure_peak(dtype: Any, n: int, repeats: int = 5) -> float:
    """Peak matmul FLOP/s of the default JAX device: median time of an n x n x n product."""
    ka, kb = jax.random.split(jax.random.key(0))
    a = jax.random.normal(ka, (n, n), dtype)
    b = jax.random.normal(kb, (n, n), dtype)
    matmul = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(matmul(a, b))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(matmul(a, b))
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(times)


def cpu_model_name() -> str:
    """The CPU's model name from /proc/cpuinfo (falls back to platform.processor())."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def jax_device_name() -> str:
    """E.g. 'gpu: NVIDIA H100 80GB HBM3' or 'cpu: Intel(R) Xeon(R) ... (2 cores)'."""
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"cpu: {cpu_model_name()} ({os.cpu_count()} cores)"
    return f"{dev.platform}: {dev.device_kind}"


def _mean_iterations(outputs: Sequence[dict]) -> Optional[float]:
    """Mean attack-loop iterations per step: max over the batch of per-example steps."""
    values = [float(np.max(jax.device_get(m["num_steps"]))) for m in outputs
              if isinstance(m, dict) and "num_steps" in m]
    return float(np.mean(values)) if values else None


def _mean_metric(outputs: Sequence[dict], key: str) -> Optional[float]:
    values = [float(jax.device_get(m[key])) for m in outputs if isinstance(m, dict) and key in m]
    return float(np.mean(values)) if values else None


# --------------------------------------------------------------------------- torch side

def load_torch() -> Optional[Any]:
    """The ``torch_reference`` module, or None when torch is not installed."""
    try:
        from benchmarks import torch_reference
    except ImportError:
        return None
    return torch_reference


def torch_device_name(device: str) -> str:
    """Human-readable name of the torch device used."""
    import torch

    if device.startswith("cuda"):
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {cpu_model_name()} ({torch.get_num_threads()} threads)"


def make_torch_step(tr: Any, model: str, variant: str, x_np: np.ndarray, y_np: np.ndarray, *,
                    num_steps: int, device: str) -> tuple[Any, Any, Any]:
    """The eager reference for one model/variant and its batch on the device: (ref, x, y)."""
    spec = MODEL_SPECS[model]
    ref = tr.TorchAdvStep(model, eps=spec.eps, step_size=spec.eps / 4, num_steps=num_steps,
                          variant=variant, device=device, lr=BENCH_LR)
    x, y = ref.prepare(x_np, y_np)
    return ref, x, y


def torch_result(timing: Timing, batch: int) -> dict:
    """img/s and attack steps of one timed PyTorch setting."""
    steps = float(np.mean([float(o.steps.float().mean()) for o in timing.outputs]))
    return dict(img_s=batch / timing.step_s, step_s=timing.step_s, steps_mean=steps)


def ours_result(timing: Timing, batch: int, compile_s: Optional[float], init_s: float) -> dict:
    """img/s, attack steps and loop iterations of one timed JAX setting."""
    return dict(img_s=batch / timing.step_s, step_s=timing.step_s, compile_s=compile_s,
                init_s=init_s, steps_mean=_mean_metric(timing.outputs, "attack_steps_mean"),
                iterations=_mean_iterations(timing.outputs))


# --------------------------------------------------------------------------- main loop

def _batch(model: str, batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic uint8 NHWC images and int32 labels, the same for both frameworks."""
    rng = np.random.default_rng([seed, batch, sorted(MODEL_SPECS).index(model)])
    x = rng.integers(0, 256, (batch, *MODEL_SPECS[model].shape), dtype=np.uint8)
    return x, rng.integers(0, 10, (batch,), dtype=np.int32)


def _torch_settings(torch_device: str) -> dict:
    """Precision/autotuning flags of the PyTorch side, recorded with the results."""
    import torch

    if torch_device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True   # what a tuned eager setup does
    return dict(cudnn_benchmark=torch.backends.cudnn.benchmark,
                cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32,
                num_threads=torch.get_num_threads())


def bench(models: Sequence[str], batches: Sequence[int], *, thresholds: Sequence[float],
          num_steps: int, dtype: str, repeats: int, min_time: float, peak_n: int,
          torch_variants: Sequence[str], use_torch: bool, seed: int = 0,
          order: str = "auto", log: Callable[[str], None] = print) -> dict:
    """Run every setting; returns {"meta": {...}, "rows": [...]} (one row per model/batch/mode).

    ``order="auto"``: on CPU all contenders of a setting are timed round-robin within every
    repeat ("round-robin"); on an accelerator all PyTorch runs come first (its cached memory
    is released after each), then all JAX runs ("phased").
    """
    tr = load_torch() if use_torch else None
    notes: list[str] = []
    if use_torch and tr is None:
        notes.append(NO_TORCH_NOTE)
        log(NO_TORCH_NOTE)
    device = jax_device_name()
    num_devices = jax.device_count()
    if num_devices > 1:
        notes.append(f"ours ran data-parallel over {num_devices} devices (the Trainer's mesh), "
                     f"PyTorch on one; % peak is against {num_devices} x the one-device peak. "
                     "Set CUDA_VISIBLE_DEVICES=0 (or JAX_PLATFORMS / XLA_FLAGS without a "
                     "forced host device count) for a one-device comparison.")
    load_before = _loadavg()
    modes: list[tuple[str, Optional[float]]] = [("standard", None)]
    modes += [("dynamic", float(c)) for c in thresholds]
    settings = [(m, b) for m in models for b in batches]

    log(f"device: {device}; measuring peak matmul FLOP/s (n={peak_n}) ...")
    peak = {"float32": measure_peak(jnp.float32, peak_n),
            "bfloat16": measure_peak(jnp.bfloat16, peak_n)}
    log(f"peak: float32 {peak['float32'] / 1e12:.3f} TFLOP/s, "
        f"bfloat16 {peak['bfloat16'] / 1e12:.3f} TFLOP/s")

    torch_name, torch_flags, torch_device = None, None, "cpu"
    if tr is not None:
        import torch

        torch_device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_name, torch_flags = torch_device_name(torch_device), _torch_settings(torch_device)
        if jax.devices()[0].platform != "cpu" and torch_device == "cpu":
            notes.append("torch has no CUDA here: the PyTorch columns ran on the CPU.")
    variants = list(torch_variants) if tr is not None else []
    rows: list[dict] = []

    def add_rows(model: str, batch: int, ours: dict, theirs: dict[str, dict]) -> None:
        fwd = flops_lib.model_forward_flops(model, MODEL_SPECS[model].shape).matmul
        for mode, c_t in modes:
            rows.append(_make_row(model, batch, mode, c_t, ours[c_t],
                                  {v: theirs[v] for v in theirs}, fwd, num_steps, dtype,
                                  {k: v * num_devices for k, v in peak.items()}, device,
                                  torch_name, repeats))
            log(format_row(rows[-1]))

    def jax_step(model: str, batch: int) -> tuple[JaxStep, jax.Array, jax.Array]:
        x_np, y_np = _batch(model, batch, seed)
        log(f"[ours] {model} batch {batch}: building the Trainer ...")
        step = make_jax_step(model, batch, num_steps=num_steps, dtype=dtype, seed=seed)
        return step, jax.device_put(x_np), jax.device_put(y_np)

    if order == "auto":
        order = "round-robin" if jax.devices()[0].platform == "cpu" else "phased"
    if order == "round-robin":
        # Shared CPUs: all contenders of a setting are timed round-robin, repeat by repeat.
        for model, batch in settings:
            step, x, y = jax_step(model, batch)
            refs = {v: make_torch_step(tr, model, v, *_batch(model, batch, seed),
                                       num_steps=num_steps, device=torch_device)
                    for v in variants}
            ours, theirs, compile_s = {}, {v: {} for v in variants}, None
            for mode, c_t in modes:
                log(f"  {model} batch {batch} {mode} c_t={c_t} ...")
                contenders: dict[str, Contender] = {
                    "ours": (lambda c_t=c_t: step(x, y, c_t), step.sync)}
                for v, (ref, xt, yt) in refs.items():
                    contenders[v] = (lambda ref=ref, xt=xt, yt=yt, c_t=c_t: ref.step(xt, yt, c_t),
                                     lambda _, ref=ref: ref.synchronize())
                timings = measure_many(contenders, repeats=repeats, min_time=min_time)
                if compile_s is None:   # the first setting compiles; later ones reuse it
                    compile_s = max(timings["ours"].first_call_s - timings["ours"].step_s, 0.0)
                ours[c_t] = ours_result(timings["ours"], batch, compile_s, step.init_s)
                for v in variants:
                    theirs[v][c_t] = torch_result(timings[v], batch)
            add_rows(model, batch, ours, theirs)
            del step, refs
    else:
        # Accelerator: all PyTorch runs first (its cache is emptied after each), then JAX,
        # whose memory pool never shrinks and would starve PyTorch if interleaved.
        theirs_all: dict[tuple[str, int], dict[str, dict]] = {}
        for model, batch in settings:
            for v in variants:
                log(f"[torch {v}] {model} batch {batch} ...")
                ref, xt, yt = make_torch_step(tr, model, v, *_batch(model, batch, seed),
                                              num_steps=num_steps, device=torch_device)
                theirs_all.setdefault((model, batch), {})[v] = {
                    c_t: torch_result(measure(lambda c_t=c_t: ref.step(xt, yt, c_t),
                                              lambda _: ref.synchronize(), repeats=repeats,
                                              min_time=min_time), batch)
                    for _, c_t in modes}
                del ref, xt, yt
                if torch_device == "cuda":
                    torch.cuda.empty_cache()
        for model, batch in settings:
            step, x, y = jax_step(model, batch)
            ours, compile_s = {}, None
            for mode, c_t in modes:
                timing = measure(lambda c_t=c_t: step(x, y, c_t), step.sync, repeats=repeats,
                                 min_time=min_time)
                if compile_s is None:
                    compile_s = max(timing.first_call_s - timing.step_s, 0.0)
                ours[c_t] = ours_result(timing, batch, compile_s, step.init_s)
            add_rows(model, batch, ours, theirs_all.get((model, batch), {}))
            del step, x, y
    meta = dict(device=device, torch_device=torch_name, jax_version=jax.__version__,
                torch_version=_torch_version(tr), torch_settings=torch_flags,
                jax_default_matmul_precision=str(jax.config.jax_default_matmul_precision),
                peak_flops=peak, peak_matmul_n=peak_n, num_devices=num_devices,
                num_steps=num_steps, dtype=dtype,
                repeats=repeats, min_time_s=min_time,
                attack_grad_factor=flops_lib.ATTACK_GRAD_FACTOR,
                update_factor=flops_lib.UPDATE_FACTOR, host_cpus=os.cpu_count(),
                order=order, loadavg_1min_before=load_before, loadavg_1min_after=_loadavg(),
                notes=notes)
    return {"meta": meta, "rows": rows}


def _loadavg() -> Optional[float]:
    """1-minute host load average (other processes skew CPU timings), None if unknown."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def _torch_version(tr: Any) -> Optional[str]:
    if tr is None:
        return None
    import torch

    return torch.__version__


def _make_row(model: str, batch: int, mode: str, c_t: Optional[float], ours: dict,
              theirs: dict[str, dict], fwd_per_image: int, num_steps: int, dtype: str,
              peak: dict[str, float], device: str, torch_name: Optional[str],
              repeats: int) -> dict:
    """One output row; FLOP/s count the algorithm's gradient evaluations (flops.py)."""
    iterations = ours["iterations"]
    if mode == "dynamic" and iterations is None:
        iterations = ours["steps_mean"]   # lower bound when the step reports no loop count
    grad_evals = flops_lib.attack_grad_evals(mode, num_steps, iterations)
    step_flops = flops_lib.train_step_flops(fwd_per_image * batch, grad_evals)
    achieved = step_flops / ours["step_s"]
    row = dict(model=model, batch=batch, mode=mode, c_t=c_t, dtype=dtype, num_steps=num_steps,
               ours_img_s=ours["img_s"], ours_step_ms=1e3 * ours["step_s"],
               ours_compile_s=ours["compile_s"], ours_init_s=ours["init_s"],
               ours_steps_mean=ours["steps_mean"],
               ours_iterations=ours["iterations"], flops_per_step=step_flops,
               ours_tflop_s=achieved / 1e12, ours_peak_frac=achieved / peak[dtype],
               device=device, torch_device=torch_name, repeats=repeats)
    best_variant, best = None, None
    for variant in TORCH_VARIANTS:
        result = theirs.get(variant, {}).get(c_t)
        row[f"torch_{variant}_img_s"] = result["img_s"] if result else None
        row[f"torch_{variant}_steps_mean"] = result["steps_mean"] if result else None
        if result and (best is None or result["img_s"] > best):
            best_variant, best = variant, result["img_s"]
    row["torch_img_s"] = best
    row["torch_variant"] = best_variant
    row["ratio"] = ours["img_s"] / best if best else None
    return row


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_row(r: dict) -> str:
    """One markdown table line (see TABLE_HEADER)."""
    c_t = "-" if r["c_t"] is None else f"{r['c_t']:g}"
    return (f"| {r['model']} | {r['batch']} | {r['mode']} | {c_t} | {r['ours_img_s']:.1f} | "
            f"{_fmt(r['ours_steps_mean'], '.2f')} | {_fmt(r['torch_fp32_steps_mean'], '.2f')} | "
            f"{_fmt(r['ours_compile_s'], '.1f')} | {r['ours_tflop_s'] * 1e3:.1f} | "
            f"{100 * r['ours_peak_frac']:.1f}% | {_fmt(r['torch_fp32_img_s'], '.1f')} | "
            f"{_fmt(r['torch_bf16_cl_img_s'], '.1f')} | {_fmt(r['ratio'], '.2f')} |")


TABLE_HEADER = (
    "| model | batch | mode | c_t | ours img/s | ours steps | torch steps | compile s | "
    "ours GFLOP/s | % peak | torch fp32 img/s | torch bf16+CL img/s | ratio |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|")


def _json_safe(value: Any) -> Any:
    """Infinite c_t as the string "inf" (strict JSON has no Infinity)."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command-line flags (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=None,
                   help=f"comma-separated, from {sorted(MODEL_SPECS)} "
                        f"(default {','.join(DEFAULT_MODELS)})")
    p.add_argument("--batches", default=None,
                   help=f"comma-separated (default {','.join(map(str, DEFAULT_BATCHES))})")
    p.add_argument("--thresholds", default=None,
                   help="dynamic c_t values, comma-separated; 'inf' = every example stops "
                        "after the first step ('' for Standard only; "
                        f"default {','.join(map(str, DEFAULT_THRESHOLDS))})")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5)")
    p.add_argument("--min-time", type=float, default=None,
                   help="seconds of back-to-back steps per repeat; 0: one step (default 1)")
    p.add_argument("--steps", type=int, default=None, help="PGD steps K (default 10)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                   help="our compute dtype (config.model.dtype)")
    p.add_argument("--torch-variants", default=",".join(TORCH_VARIANTS))
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch intra-op threads (default: torch's own choice)")
    p.add_argument("--order", default="auto", choices=("auto", "round-robin", "phased"),
                   help="auto: round-robin on CPU (shared cores), phased on GPU (memory)")
    p.add_argument("--peak-n", type=int, default=None,
                   help="matmul size for the peak (default 8192 on GPU/TPU, 2048 on CPU)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: mnist_cnn and cifar_cnn, batch 8, 2 PGD steps, 1 repeat "
                        "of one step, c_t 0.5 and inf (flags given explicitly still win)")
    p.add_argument("--json", default=None, help="write {meta, rows} to this file")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    on_cpu = jax.devices()[0].platform == "cpu"
    if args.quick:
        defaults = dict(models="mnist_cnn,cifar_cnn", batches="8", thresholds="0.5,inf",
                        repeats=1, min_time=0.0, steps=2, peak_n=1024)
    else:
        defaults = dict(models=",".join(DEFAULT_MODELS),
                        batches=",".join(map(str, DEFAULT_BATCHES)),
                        thresholds=",".join(map(str, DEFAULT_THRESHOLDS)), repeats=5,
                        min_time=1.0, steps=10, peak_n=2048 if on_cpu else 8192)
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


def main(argv: Optional[Sequence[str]] = None) -> dict:
    """Parse flags, run, print a markdown table, optionally write JSON."""
    args = parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in MODEL_SPECS:
            raise SystemExit(f"unknown model {m!r}; choose from {sorted(MODEL_SPECS)}")
    variants = [v for v in args.torch_variants.split(",") if v]
    for v in variants:
        if v not in TORCH_VARIANTS:
            raise SystemExit(f"unknown torch variant {v!r}; choose from {list(TORCH_VARIANTS)}")
    if args.torch_threads and not args.no_torch and load_torch() is not None:
        import torch

        torch.set_num_threads(args.torch_threads)
    import jax

    from fosc_jax import cpu_malloc
    cpu_malloc.keep_freed_memory_on_cpu(jax.default_backend())  # as train.py does
    result = bench(models, [int(b) for b in args.batches.split(",") if b],
                   thresholds=[float(c) for c in args.thresholds.split(",") if c],
                   num_steps=args.steps, dtype=args.dtype, repeats=args.repeats,
                   min_time=args.min_time, peak_n=args.peak_n, torch_variants=variants,
                   use_torch=not args.no_torch, seed=args.seed, order=args.order,
                   log=lambda s: print(s, flush=True))
    meta = result["meta"]
    print(f"\nours: {meta['device']} (jax {meta['jax_version']}, {args.dtype}); "
          f"torch: {meta['torch_device'] or 'not run'}")
    print(f"host load average (1 min): {meta['loadavg_1min_before']} before, "
          f"{meta['loadavg_1min_after']} after, on {meta['host_cpus']} CPUs")
    print(f"peak matmul: float32 {meta['peak_flops']['float32'] / 1e12:.3f} TFLOP/s, "
          f"bfloat16 {meta['peak_flops']['bfloat16'] / 1e12:.3f} TFLOP/s")
    print(TABLE_HEADER)
    for row in result["rows"]:
        print(format_row(row))
    for note in meta["notes"]:
        print(f"note: {note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(_json_safe(result), f, indent=1)
        print(f"wrote {len(result['rows'])} rows to {args.json}")
    return result


if __name__ == "__main__":
    main()
