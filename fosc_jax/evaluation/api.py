"""Library entry points: evaluate a Classifier on arrays, or the latest checkpoints of runs."""
from __future__ import annotations

import fractions
import os
from typing import Any, Optional, Sequence

import numpy as np

from fosc_jax.autoattack import runner as aa_runner
from fosc_jax.classifier import Classifier
from fosc_jax.config import config_get
from fosc_jax.data.subset import eval_subset_indices
from fosc_jax.evaluation import honesty as honesty_lib
from fosc_jax.evaluation.convergence import convergence_report
from fosc_jax.evaluation.suite import (DEFAULT_ATTACKS, Suite, accuracy_entry, attack_spec,
                                       check_inputs, data_placement, timed, worst_case)
from fosc_jax.evaluation.resume import PartialRecords, data_digest, model_identity
from fosc_jax.evaluation.tables import defense_label, write_results

DEFAULT_BATCH_SIZE = 256


def parse_eps_list(text: str | Sequence[float]) -> list[float]:
    """"2/255,4/255,0.1" -> [0.00784..., 0.0156..., 0.1]; each value must lie in (0, 1]."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        if isinstance(item, str):
            item = item.strip()
            if not item:
                continue
            try:
                value = float(fractions.Fraction(item))
            except (ValueError, ZeroDivisionError) as err:
                raise ValueError(f"cannot read eps {item!r}: use decimals or fractions "
                                 f"like 8/255.") from err
        else:
            value = float(item)
        if not 0 < value <= 1:
            raise ValueError(f"eps values must lie in (0, 1], got {value}.")
        out.append(value)
    if not out:
        raise ValueError(f"no eps values in {text!r}.")
    return out


def _check_surrogate(classifier: Classifier, surrogate: Classifier, x: np.ndarray) -> None:
    import jax
    shape = jax.ShapeDtypeStruct((1,) + x.shape[1:], np.float32)
    a = jax.eval_shape(classifier.apply, classifier.variables, shape)
    b = jax.eval_shape(surrogate.apply, surrogate.variables, shape)
    if a.shape != b.shape:
        raise ValueError(f"the surrogate's logits have shape {b.shape[1:]} but the defense's "
                         f"have {a.shape[1:]}: they must classify the same classes.")


def evaluate_classifier(classifier: Classifier, x: Any, y: Any, *,
                        attacks: Sequence[str] = DEFAULT_ATTACKS, eps: Optional[float] = None,
                        step_fraction: Optional[float] = None,
                        batch_size: Optional[int] = None, seed: int = 0,
                        surrogate: Optional[Classifier] = None,
                        eps_sweep: Sequence[float] = (), honesty: bool = True,
                        large_eps: float = honesty_lib.LARGE_EPS,
                        z: float = honesty_lib.DEFAULT_Z,
                        restart_margin: float = honesty_lib.DEFAULT_RESTART_MARGIN,
                        progress: bool = True, num_devices: Optional[int] = None,
                        return_per_example: bool = False,
                        autoattack_budget: str = "standard",
                        resume_dir: Optional[str] = None, resume_write: bool = True) -> dict:
    """Clean and adversarial accuracy of ``classifier`` on (x, y), plus honesty checks.

    Args:
      classifier: the defense (inference mode).
      x, y: test images (uint8, or float in [0, 1]) [N, H, W, C] and int labels [N].
      attacks: names from ``ATTACKS`` ("fgsm", "pgd10", "pgd20", "cw") or AutoAttack's
        ("autoattack": the standard cascade; "apgd-ce", "apgd-dlr", "apgd-t", "fab-t",
        "square": one attack alone), see ``fosc_jax.autoattack.runner``.
      eps: L-inf radius; default ``classifier.config.attack.eps``.
      step_fraction: PGD/CW step as a fraction of eps (default 1/4, FGSM always eps).
      batch_size: default ``classifier.config.eval.batch_size`` or 256.
      surrogate: black-box source model: attacks crafted on it, scored on ``classifier``.
      eps_sweep: extra eps values for PGD-10 (Figure 4a).
      honesty: run the gradient-masking checks (PGD-10 restart and large eps cost two more
        PGD-10 passes).
      return_per_example: add "per_example" (boolean arrays; not written to JSON).
      autoattack_budget: "standard" (AutoAttack as published) or "cpu" (fewer target
        classes and Square queries; labelled NOT standard in the record and tables).
      resume_dir: a folder for per-attack partial records (see ``evaluation.resume``):
        each finished attack is saved there and a rerun with the same model, data and
        settings reuses it (``record["resumed"]`` lists those); ``resume_write`` False
        reuses without writing (processes other than 0).
    Returns a JSON-friendly record: run metadata (defense, name, dataset, epoch, eps, seed,
    batch_size, num_devices), ``attacks`` (settings used), ``clean``, ``white_box[name]``,
    ``worst_case`` (per example over clean and all attacks), ``black_box`` (or None),
    ``eps_sweep``, ``restart``, ``large_eps``, ``class_share``, ``honesty`` ({z,
    restart_margin, warnings}), ``convergence`` (per gradient attack, the final box-aware
    FOSC of its robust points, see ``evaluation.convergence``) and ``seconds``; accuracies as {accuracy, correct, n}.
    The PGD/CW step is eps/4 (the paper's evaluation), not the training config's step.
    """
    if not isinstance(classifier, Classifier):
        raise ValueError(f"classifier must be a Classifier, got {type(classifier).__name__}.")
    x, y = check_inputs(x, y)
    config = classifier.config
    eps = float(eps if eps is not None else config_get(config, "attack.eps", 0.0))
    if not 0 < eps <= 1:
        raise ValueError(f"eps must lie in (0, 1] (pass eps= or give the classifier a config "
                         f"with attack.eps), got {eps}.")
    aa_names = [aa_runner.canonical_name(a) for a in attacks if aa_runner.canonical_name(a)]
    specs = [attack_spec(a, step_fraction) for a in attacks if not aa_runner.canonical_name(a)]
    aa_runner.get_budget(autoattack_budget)
    if len({s.name for s in specs}) < len(specs) or len(set(aa_names)) < len(aa_names):
        raise ValueError(f"attacks are repeated: {list(attacks)}.")
    sweep = parse_eps_list(eps_sweep) if len(eps_sweep) else []
    batch_size = int(batch_size or config_get(config, "eval.batch_size", DEFAULT_BATCH_SIZE))
    if surrogate is not None:
        _check_surrogate(classifier, surrogate, x)
    suite = Suite(classifier, x, y, batch_size=batch_size, seed=seed, progress=progress,
                  placement=data_placement(num_devices))

    partial = _partial_records(resume_dir, resume_write, classifier, surrogate, x, y, seed,
                               suite.batch_size)
    seconds: dict[str, float] = {}
    per_example: dict[str, np.ndarray] = {}
    pred, seconds["clean"] = timed(suite.predict)
    per_example["clean"] = pred == y
    white: dict[str, dict] = {}
    final_fosc: dict[str, tuple] = {}  # the convergence report's inputs
    for spec in specs:
        def compute(spec=spec):
            out = suite.attack(spec, eps)
            return out["correct"], dict(fosc_box=np.asarray(out["fosc_box"], float).tolist())
        per_example[spec.name], extra, seconds[spec.name] = partial.run(
            spec.name, dict(eps=eps, **spec.settings(eps)), compute)
        final_fosc[spec.name] = (np.asarray(extra["fosc_box"], np.float32),
                                 per_example[spec.name], spec.loss)
        white[spec.name] = accuracy_entry(per_example[spec.name])
    aa = (_autoattack(partial, suite, aa_names, eps, per_example["clean"], autoattack_budget)
          if aa_names else None)
    if aa:
        final_fosc.update(aa["final_fosc"])
        per_example.update(aa["per_example"])
        white.update(aa["white_box"])
        seconds.update(aa["seconds"])

    record: dict[str, Any] = dict(
        defense=config_get(config, "defense.name"), name=config_get(config, "name"),
        dataset=config_get(config, "data.name"), epoch=int(classifier.epoch), eps=eps,
        seed=seed, batch_size=suite.batch_size, num_devices=suite.placement.num_devices,
        attacks={**{s.name: s.settings(eps) for s in specs}, **(aa["attacks"] if aa else {})},
        clean=accuracy_entry(per_example["clean"]), white_box=white,
        worst_case=(accuracy_entry(worst_case(per_example.values())) if specs or aa_names
                    else None),
        class_share=float(np.bincount(y).max() / len(y)),
        black_box=None, eps_sweep=[], restart=None, large_eps=None, honesty=None,
        autoattack=aa["autoattack"] if aa else None,
        convergence=convergence_report(final_fosc, per_example["clean"]))
    record["label"] = defense_label(record["defense"], record["name"])

    if surrogate is not None:
        bb = {}
        for spec in specs:
            name = f"bb_{spec.name}"
            per_example[name], _, seconds[name] = partial.run(
                name, dict(eps=eps, **spec.settings(eps)),
                lambda spec=spec: (suite.attack(spec, eps, key_name=f"bb/{spec.name}",
                                                surrogate=surrogate)["correct"], None))
            bb[spec.name] = accuracy_entry(per_example[name])
        record["black_box"] = dict(attacks=bb, epoch=int(surrogate.epoch),
                                   name=config_get(surrogate.config, "name"))

    pgd10 = attack_spec("pgd10", step_fraction)
    for e in sweep:
        correct, _, seconds[f"sweep_{e:.4g}"] = partial.run(
            f"sweep_{e:.4g}", dict(eps=e, **pgd10.settings(e)),
            lambda e=e: (suite.attack(pgd10, e)["correct"], None))
        record["eps_sweep"].append(dict(eps=e, **accuracy_entry(correct)))

    if honesty:
        first = per_example.get("pgd10")
        if first is None:
            first = partial.run("pgd10", dict(eps=eps, **pgd10.settings(eps)),
                                lambda: (suite.attack(pgd10, eps)["correct"], None))[0]
        second, _, seconds["restart"] = partial.run(
            "pgd10_restart", dict(eps=eps, **pgd10.settings(eps)),
            lambda: (suite.attack(pgd10, eps, key_name="pgd10/restart")["correct"], None))
        per_example["pgd10_restart"] = second
        record["restart"] = dict(first=accuracy_entry(first), second=accuracy_entry(second),
                                 worst=accuracy_entry(worst_case([first, second])))
        if large_eps > eps:
            big = float(large_eps)
            correct, _, seconds["large_eps"] = partial.run(
                "large_eps", dict(eps=big, **pgd10.settings(big)),
                lambda: (suite.attack(pgd10, big)["correct"], None))
            record["large_eps"] = dict(eps=big, **accuracy_entry(correct))
        record["honesty"] = dict(z=z, restart_margin=restart_margin,
                                 warnings=honesty_lib.run_checks(record, z, restart_margin))
    record["seconds"] = seconds
    record["resumed"] = list(partial.resumed)
    if return_per_example:
        record["per_example"] = per_example
    return record


def _partial_records(folder: Optional[str], write: bool, classifier: Classifier,
                     surrogate: Optional[Classifier], x: np.ndarray, y: np.ndarray, seed: int,
                     batch_size: int) -> PartialRecords:
    """Per-attack partial records in ``folder`` (None: none), keyed by what the results
    depend on: the model(s), the test subset, the attack seed and the batch size."""
    if folder is None:
        return PartialRecords(None, {})
    identity = dict(model=model_identity(classifier), n=int(len(y)),
                    data_sha256=data_digest(x, y), seed=int(seed), batch_size=int(batch_size),
                    surrogate=model_identity(surrogate) if surrogate is not None else None)
    return PartialRecords(folder, identity, write=write)


def _autoattack(partial: PartialRecords, suite: Suite, names: Sequence[str], eps: float,
                clean: np.ndarray, budget: str) -> dict:
    """run_autoattack's output, one saved partial record per AutoAttack name."""
    out: dict[str, Any] = dict(per_example={}, white_box={}, attacks={}, seconds={},
                               autoattack=None, final_fosc={})
    for name in names:
        def compute(name=name):
            r = aa_runner.run_autoattack(suite, [name], eps, clean, budget)
            fosc = {k: dict(fosc=np.asarray(f, float).tolist(), correct=np.asarray(c).tolist(),
                            loss=loss) for k, (f, c, loss) in r["final_fosc"].items()}
            return r["per_example"][name], dict(white_box=r["white_box"][name],
                                                attacks=r["attacks"][name],
                                                autoattack=r["autoattack"], final_fosc=fosc)
        correct, extra, out["seconds"][name] = partial.run(
            name, dict(eps=eps, budget=budget), compute)
        out["per_example"][name] = correct
        out["white_box"][name], out["attacks"][name] = extra["white_box"], extra["attacks"]
        if extra["autoattack"] is not None:
            out["autoattack"] = extra["autoattack"]
        for k, v in extra["final_fosc"].items():
            out["final_fosc"][k] = (np.asarray(v["fosc"], np.float32),
                                    np.asarray(v["correct"], bool), v["loss"])
    return out


def _load_classifier(workdir: str) -> Classifier:
    from fosc_jax.rundir.export import load_classifier
    if not os.path.isdir(workdir):
        raise ValueError(f"workdir {workdir!r} does not exist.")
    return load_classifier(workdir)


def evaluate_workdirs(workdirs: Sequence[str], *, num_examples: Optional[int] = None,
                      surrogate: Optional[str] = None, out: Optional[str] = None,
                      write: bool = True, data_seed: int = 0, data: Optional[str] = None,
                      resume: bool = True, log=print, **kwargs) -> list[dict]:
    """Evaluate the latest checkpoint of each run on its test set (see evaluate_classifier).

    Each run's record goes to RUN/eval/results.{json,csv,md} (when ``write``; each file
    atomically, results.json last); with ``out`` the combined table of all runs is written
    there too. ``num_examples`` picks a fixed random test subset (seeded by ``data_seed``).
    ``surrogate`` is a run directory whose model crafts the black-box examples. ``data``
    says where the test data is on this machine ("bundled", "tfds", "files:DIR" or DIR; see
    ``fosc_jax.data.sources.resolve_source``): needed when a run recorded "files" without a
    folder and ``$FOSC_JAX_<NAME>_DIR`` is not set. With ``resume`` each finished attack is
    saved in RUN/eval/partial/ and reused by a rerun with the same settings. ``log`` gets
    one line per file written. Returns the records in order.
    """
    if not workdirs:
        raise ValueError("give at least one workdir.")
    surrogate_clf = _load_classifier(surrogate) if surrogate else None
    datasets: dict[tuple, Any] = {}
    records = []
    for workdir in workdirs:
        clf = _load_classifier(workdir)
        ds = _test_data(workdir, clf.config, data, datasets)
        idx = eval_subset_indices(len(ds.y_test), num_examples, data_seed)
        partial_dir = os.path.join(workdir, "eval", PARTIAL_DIR) if resume else None
        record = evaluate_classifier(clf, ds.x_test[idx], ds.y_test[idx],
                                     surrogate=surrogate_clf, resume_dir=partial_dir,
                                     resume_write=write, **kwargs)
        record.update(workdir=os.fspath(workdir), data_seed=data_seed,
                      subset=num_examples is not None and len(idx) < len(ds.y_test))
        if record["black_box"] is not None:
            record["black_box"]["workdir"] = os.fspath(surrogate)
        if write:
            _written(write_results(os.path.join(workdir, "eval"), [record]), log)
            if partial_dir is not None:
                PartialRecords(partial_dir, {}).clear()
        records.append(record)
    if out is not None:
        _written(write_results(out, records), log)
    return records


PARTIAL_DIR = "partial"


def data_location(workdir: str, config: Any, data: Optional[str] = None) -> tuple:
    """(source, data_dir) of a run's data on this machine (``resolve_source``); DataError
    (one line naming the run and what to pass) when it cannot be told."""
    from fosc_jax.data.sources import resolve_source
    from fosc_jax.errors import DataError
    try:
        return resolve_source(config_get(config, "data.source"), config_get(config, "data.name"),
                              config_get(config, "data.data_dir"), data)
    except ValueError as err:
        raise DataError(f"{workdir}: {err}") from err


def _test_data(workdir: str, config: Any, data: Optional[str], cache: dict) -> Any:
    """The data set a run was trained on, found on this machine (cached by source)."""
    from fosc_jax.data import load_dataset
    from fosc_jax.errors import data_errors

    name = config_get(config, "data.name")
    source, data_dir = data_location(workdir, config, data)
    key = (source, name, data_dir)
    if key not in cache:
        with data_errors(f"{workdir}: data.source = {source!r} with data.name = {name!r}"):
            cache[key] = load_dataset(source, name, data_dir=data_dir)
    return cache[key]


def _written(paths: dict[str, str], log) -> None:
    """Say where the results went: one line per folder."""
    folder = os.path.dirname(paths["json"])
    log(f"wrote {os.path.join(folder, 'results.{' + ','.join(paths) + '}')}")


__all__ = ["parse_eps_list", "eval_subset_indices", "evaluate_classifier", "evaluate_workdirs"]
