"""The white-box / black-box attack suite: batched, compiled once per attack, data-parallel.

Every attack runs as one jitted function of ``(craft_variables, score_variables, x, y, key,
eps)``: the weights are arguments (never baked-in constants) and ``eps`` is traced, so an eps
sweep reuses the PGD-10 program. Batches have one static shape: the last one is padded with
copies of example 0 and the padding is dropped on the host. Each batch's random start uses
``fold_in(attack_key, batch_index)``, so results are reproducible for a given seed and batch
size (and do not depend on the device count). With several devices the batch is sharded over
a ``Mesh`` axis ``'data'``.
"""
from __future__ import annotations

import dataclasses
import functools
import time
import zlib
from typing import Any, Callable, Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from fosc_jax import parallel
from fosc_jax.attacks import masked_pgd
from fosc_jax.autoattack.dlr import margin
from fosc_jax.classifier import Classifier
from fosc_jax.data.pipeline import unit_float
from fosc_jax.evaluation.convergence import final_fosc_box


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """One evaluation attack; the step is ``step_fraction * eps`` (docs/method.md, Evaluation)."""
    name: str
    label: str
    loss: str = "ce"
    num_steps: int = 10
    step_fraction: float = 0.25
    random_start: bool = True
    kappa: float = 50.0

    def settings(self, eps: float) -> dict:
        """The concrete settings at ``eps``, as written into results.json."""
        return dict(label=self.label, loss=self.loss, num_steps=self.num_steps,
                    step_size=float(eps) * self.step_fraction, random_start=self.random_start,
                    kappa=self.kappa if self.loss == "cw" else None)


ATTACKS: dict[str, AttackSpec] = {
    "fgsm": AttackSpec("fgsm", "FGSM", num_steps=1, step_fraction=1.0, random_start=False),
    "pgd10": AttackSpec("pgd10", "PGD-10", num_steps=10),
    "pgd20": AttackSpec("pgd20", "PGD-20", num_steps=20),
    "cw": AttackSpec("cw", "CW", loss="cw", num_steps=30),
}
DEFAULT_ATTACKS: tuple[str, ...] = tuple(ATTACKS)


def accepted_attacks() -> list[tuple[str, str]]:
    """(name, label) of every attack evaluation accepts, the suite's then AutoAttack's: the
    one list the errors and the CLIs' --help print."""
    from fosc_jax.autoattack.names import LABELS, NAMES
    return [(n, s.label) for n, s in ATTACKS.items()] + [(n, LABELS[n]) for n in NAMES]


def unknown_attack(name: str) -> ValueError:
    """The error for a name no attack has, listing every accepted one."""
    names = ", ".join(n for n, _ in accepted_attacks())
    return ValueError(f"unknown attack {name!r}; choose from {names}.")


def canonical_attack(name: str) -> str:
    """Any accepted spelling ("PGD-10", "cw-inf", "APGD_T", "aa") -> the attack's name."""
    from fosc_jax.autoattack.names import canonical_name
    return canonical_name(name) or attack_spec(name).name


def attack_spec(name: str, step_fraction: Optional[float] = None) -> AttackSpec:
    """Look up an attack by name ("fgsm", "pgd10"/"PGD-10", "pgd20", "cw"/"cw-inf")."""
    key = name.lower().replace("-", "").replace("_", "")
    key = {"cwinf": "cw", "pgd": "pgd10"}.get(key, key)
    if key not in ATTACKS:
        raise unknown_attack(name)
    spec = ATTACKS[key]
    if step_fraction is not None and spec.num_steps > 1:
        if not step_fraction > 0:
            raise ValueError(f"step_fraction must be > 0, got {step_fraction}.")
        spec = dataclasses.replace(spec, step_fraction=float(step_fraction))
    return spec


def attack_key(seed: int, name: str) -> jax.Array:
    """The PRNG key of one attack: a stable function of (seed, name)."""
    return jax.random.fold_in(jax.random.key(seed), zlib.crc32(name.encode()) & 0x7FFFFFFF)


# ----------------------------------------------------------------------------- inputs


def as_unit_float(x: Any) -> np.ndarray:
    """Host images -> float32 in [0, 1]: uint8 is divided by 255, floats are checked."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return unit_float(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"x must be uint8 or float images, got dtype {x.dtype}.")
    if x.size and (np.nanmin(x) < 0.0 or np.nanmax(x) > 1.0 or np.isnan(x).any()):
        raise ValueError(f"float images must lie in [0, 1], got range "
                         f"[{np.nanmin(x)}, {np.nanmax(x)}] (is x normalised? pass raw pixels).")
    return x.astype(np.float32)


def check_inputs(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a test set: x [N, H, W, C] uint8/float in [0, 1], y int [N]."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 4:
        raise ValueError(f"x must be NHWC images [N, H, W, C], got shape {x.shape}.")
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(f"y must have shape ({len(x)},), got {y.shape}.")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"y must hold integer labels, got dtype {y.dtype}.")
    if len(x) == 0:
        raise ValueError("the evaluation set is empty.")
    if x.dtype != np.uint8:
        x = as_unit_float(x)
    return x, y.astype(np.int32)


_to_unit = unit_float


# ----------------------------------------------------------------------------- devices


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where batches and weights go: one device, or a 1-D mesh with axis ``'data'``."""
    mesh: Optional[Mesh]

    @property
    def num_devices(self) -> int:
        return 1 if self.mesh is None else self.mesh.size

    def batch(self, a: np.ndarray) -> jax.Array:
        return jnp.asarray(a) if self.mesh is None else parallel.shard_batch(a, self.mesh)

    def replicate(self, tree: Any) -> Any:
        return tree if self.mesh is None else parallel.replicate(tree, self.mesh)


def data_placement(num_devices: Optional[int] = None) -> Placement:
    """Data-parallel placement over the first ``num_devices`` devices (default: all)."""
    mesh = parallel.make_mesh(num_devices)
    return Placement(None if mesh.size == 1 else mesh)


def _batch_size(requested: int, n: int, num_devices: int) -> int:
    if requested < 1:
        raise ValueError(f"batch_size must be >= 1, got {requested}.")
    size = min(requested, n)
    return -(-size // num_devices) * num_devices  # round up to a multiple of the devices


# ----------------------------------------------------------------------------- compiled fns


def _apply(model: Any, variables: Any, x: jax.Array) -> jax.Array:
    return Classifier(model=model, variables=None).apply(variables, x)


@functools.partial(jax.jit, static_argnames=("craft_model", "score_model", "spec"))
def _attack_batch(craft_vars, score_vars, x, y, key, eps, *, craft_model, score_model, spec):
    x = _to_unit(x)
    res = masked_pgd(lambda z: _apply(craft_model, craft_vars, z), x, y, key, eps=eps,
                     step_size=eps * spec.step_fraction, max_steps=spec.num_steps,
                     random_start=spec.random_start, loss=spec.loss, kappa=spec.kappa)
    logits = _apply(score_model, score_vars, res.x_adv)
    pred = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    fosc_box = final_fosc_box(lambda z: _apply(craft_model, craft_vars, z), res.x_adv, x, y,
                              eps, spec.loss, spec.kappa)
    return dict(pred=pred, fosc=res.fosc, fosc_box=fosc_box, loss=res.loss,
                num_steps=res.num_steps, margin=margin(logits, y))


@functools.partial(jax.jit, static_argnames=("craft_model", "score_model", "spec"))
def _transfer_batch(craft_vars, score_vars_list, x, y, key, eps, *, craft_model, score_model,
                    spec):
    """Craft once on the surrogate, score on each of several models (same architecture)."""
    x = _to_unit(x)
    res = masked_pgd(lambda z: _apply(craft_model, craft_vars, z), x, y, key, eps=eps,
                     step_size=eps * spec.step_fraction, max_steps=spec.num_steps,
                     random_start=spec.random_start, loss=spec.loss, kappa=spec.kappa)
    return jnp.stack([jnp.argmax(_apply(score_model, v, res.x_adv), axis=-1).astype(jnp.int32)
                      for v in score_vars_list])


def transfer_attack(surrogate: Classifier, targets: Sequence[Classifier], x: np.ndarray,
                    y: np.ndarray, spec: AttackSpec, eps: float, *, batch_size: int,
                    seed: int = 0, placement: Optional[Placement] = None,
                    progress: bool = False) -> list[np.ndarray]:
    """Black-box accuracy of several defenses against one set of transfer examples.

    Crafts ``spec`` on ``surrogate`` once per batch and scores every target on the same
    adversarial batch; the random starts are those of ``Suite.attack(spec, eps,
    key_name="bb/" + spec.name, surrogate=...)``, so each target gets exactly the numbers a
    per-target black-box evaluation gives, at the cost of one crafting pass. Targets must
    share one Flax module. Returns per-example correctness [N] per target.
    """
    if len({t.model for t in targets}) != 1:
        raise ValueError("transfer_attack: the targets must share one model architecture.")
    placement = placement or data_placement()
    x, y = check_inputs(x, y)
    rep = placement.replicate
    cv, svs = rep(surrogate.variables), tuple(rep(t.variables) for t in targets)
    key = attack_key(seed, f"bb/{spec.name}")
    fn = functools.partial(_transfer_batch, craft_model=surrogate.model,
                           score_model=targets[0].model, spec=spec)
    eps_arr = jnp.float32(eps)
    pred = run_batched(lambda xb, yb, b: fn(cv, svs, xb, yb, jax.random.fold_in(key, b),
                                            eps_arr).T,
                       x, y, batch_size=batch_size, placement=placement,
                       desc=f"black-box {spec.label} eps={eps:.4g}", progress=progress)
    return [pred[:, i] == y for i in range(len(targets))]


@functools.partial(jax.jit, static_argnames=("model",))
def _predict_batch(variables, x, *, model):
    return jnp.argmax(_apply(model, variables, _to_unit(x)), axis=-1).astype(jnp.int32)


def make_attack_fn(craft: Classifier, score: Classifier, spec: AttackSpec) -> Callable:
    """(craft_vars, score_vars, x, y, key, eps) -> dict of per-example arrays, jitted.

    The attack is crafted with ``craft``'s model and scored on ``score``'s (the same model
    for white-box). Outputs: ``pred`` (score model's class on x_adv), ``fosc`` (ball only, as
    the loop computes it), ``fosc_box`` (box-aware, see ``evaluation.convergence``), ``loss``
    (attack loss on the craft model), ``num_steps`` and ``margin`` (score model's logit
    margin z_y - max_{j != y} z_j at x_adv). Models and spec are static jit
    arguments, so equal Flax modules share one compiled program across calls.
    """
    return functools.partial(_attack_batch, craft_model=craft.model, score_model=score.model,
                             spec=spec)


def make_predict_fn(classifier: Classifier) -> Callable:
    """(variables, x) -> predicted class [B], jitted (one program per Flax module)."""
    return functools.partial(_predict_batch, model=classifier.model)


def run_batched(call: Callable[[jax.Array, jax.Array, int], dict], x: np.ndarray,
                y: np.ndarray, *, batch_size: int, placement: Placement,
                desc: str = "", progress: bool = True) -> dict[str, np.ndarray]:
    """Apply ``call(x_batch, y_batch, batch_index)`` over static-shape batches.

    The last batch is padded with copies of example 0; padded rows are dropped. Results of
    batch i are fetched after batch i + 1 is dispatched, so the device never waits on the
    host. Returns the concatenated per-example outputs (numpy, length N).
    """
    n = len(x)
    size = _batch_size(batch_size, n, placement.num_devices)
    num_batches = -(-n // size)
    pad = num_batches * size - n
    if pad:
        x = np.concatenate([x, np.repeat(x[:1], pad, axis=0)])
        y = np.concatenate([y, np.repeat(y[:1], pad, axis=0)])
    outs: list[dict] = []
    pending = None
    for b in tqdm(range(num_batches), desc=desc, disable=not progress, leave=False):
        sl = slice(b * size, (b + 1) * size)
        result = call(placement.batch(x[sl]), placement.batch(y[sl]), b)
        if pending is not None:
            outs.append(parallel.to_host(pending))  # multi-process: gathered
        pending = result
    outs.append(parallel.to_host(pending))
    if isinstance(outs[0], dict):
        return {k: np.concatenate([o[k] for o in outs])[:n] for k in outs[0]}
    return np.concatenate(outs)[:n]


@dataclasses.dataclass
class Suite:
    """Compiled attacks for one (defense, optional surrogate) pair, reused across eps/keys."""
    classifier: Classifier
    x: np.ndarray
    y: np.ndarray
    batch_size: int
    seed: int = 0
    progress: bool = True
    placement: Placement = dataclasses.field(default_factory=data_placement)

    def __post_init__(self):
        self.x, self.y = check_inputs(self.x, self.y)
        self.batch_size = _batch_size(int(self.batch_size), len(self.y),
                                      self.placement.num_devices)
        self._fns: dict = {}
        self._vars: dict = {}

    def _variables(self, clf: Classifier) -> Any:
        if id(clf) not in self._vars:
            self._vars[id(clf)] = (clf, self.placement.replicate(clf.variables))
        return self._vars[id(clf)][1]

    def predict(self) -> np.ndarray:
        """Clean predictions [N]."""
        if "predict" not in self._fns:
            self._fns["predict"] = make_predict_fn(self.classifier)
        fn, v = self._fns["predict"], self._variables(self.classifier)
        return run_batched(lambda xb, yb, b: fn(v, xb), self.x, self.y,
                           batch_size=self.batch_size, placement=self.placement,
                           desc="clean", progress=self.progress)

    def attack(self, spec: AttackSpec, eps: float, *, key_name: Optional[str] = None,
               surrogate: Optional[Classifier] = None) -> dict[str, np.ndarray]:
        """Per-example outputs of ``spec`` at ``eps`` (crafted on ``surrogate`` if given)."""
        if not 0 < eps <= 1:
            raise ValueError(f"eps must lie in (0, 1] for inputs in [0, 1], got {eps}.")
        craft = surrogate if surrogate is not None else self.classifier
        cache_key = (spec, id(craft))
        if cache_key not in self._fns:
            self._fns[cache_key] = make_attack_fn(craft, self.classifier, spec)
        fn = self._fns[cache_key]
        cv, sv = self._variables(craft), self._variables(self.classifier)
        key = attack_key(self.seed, key_name or spec.name)
        eps_arr = jnp.float32(eps)
        desc = f"{'black-box ' if surrogate is not None else ''}{spec.label} eps={eps:.4g}"
        out = run_batched(lambda xb, yb, b: fn(cv, sv, xb, yb, jax.random.fold_in(key, b),
                                               eps_arr),
                          self.x, self.y, batch_size=self.batch_size,
                          placement=self.placement, desc=desc, progress=self.progress)
        out["correct"] = out["pred"] == self.y
        return out


def accuracy_entry(correct: np.ndarray) -> dict:
    """{"accuracy", "correct", "n"} of a boolean per-example array."""
    correct = np.asarray(correct, bool)
    k, n = int(correct.sum()), int(correct.size)
    return dict(accuracy=k / n, correct=k, n=n)


def worst_case(per_example: Iterable[np.ndarray]) -> np.ndarray:
    """Per-example worst case: an example counts as correct only if correct under all."""
    arrays = [np.asarray(a, bool) for a in per_example]
    if not arrays:
        raise ValueError("worst_case needs at least one array.")
    return np.logical_and.reduce(arrays)


def timed(fn: Callable, *args, **kwargs) -> tuple[Any, float]:
    """(fn(*args, **kwargs), wall seconds)."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


__all__ = ["AttackSpec", "ATTACKS", "DEFAULT_ATTACKS", "attack_spec", "attack_key",
           "accepted_attacks", "canonical_attack", "unknown_attack",
           "as_unit_float", "check_inputs", "Placement", "data_placement", "make_attack_fn",
           "make_predict_fn", "run_batched", "Suite", "accuracy_entry", "worst_case",
           "transfer_attack"]
