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
                        autoattack_budget: str = "standard") -> dict:
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

    seconds: dict[str, float] = {}
    per_example: dict[str, np.ndarray] = {}
    pred, seconds["clean"] = timed(suite.predict)
    per_example["clean"] = pred == y
    white: dict[str, dict] = {}
    final_fosc: dict[str, tuple] = {}  # the convergence report's inputs
    for spec in specs:
        out, seconds[spec.name] = timed(suite.attack, spec, eps)
        per_example[spec.name] = out["correct"]
        final_fosc[spec.name] = (out["fosc_box"], out["correct"], spec.loss)
        white[spec.name] = accuracy_entry(out["correct"])
    aa = (aa_runner.run_autoattack(suite, aa_names, eps, per_example["clean"],
                                   autoattack_budget) if aa_names else None)
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
            out, seconds[f"bb_{spec.name}"] = timed(suite.attack, spec, eps,
                                                    key_name=f"bb/{spec.name}",
                                                    surrogate=surrogate)
            per_example[f"bb_{spec.name}"] = out["correct"]
            bb[spec.name] = accuracy_entry(out["correct"])
        record["black_box"] = dict(attacks=bb, epoch=int(surrogate.epoch),
                                   name=config_get(surrogate.config, "name"))

    pgd10 = attack_spec("pgd10", step_fraction)
    for e in sweep:
        out, seconds[f"sweep_{e:.4g}"] = timed(suite.attack, pgd10, e)
        record["eps_sweep"].append(dict(eps=e, **accuracy_entry(out["correct"])))

    if honesty:
        first = per_example.get("pgd10")
        if first is None:
            first = suite.attack(pgd10, eps)["correct"]
        second, seconds["restart"] = timed(suite.attack, pgd10, eps, key_name="pgd10/restart")
        second = second["correct"]
        per_example["pgd10_restart"] = second
        record["restart"] = dict(first=accuracy_entry(first), second=accuracy_entry(second),
                                 worst=accuracy_entry(worst_case([first, second])))
        if large_eps > eps:
            out, seconds["large_eps"] = timed(suite.attack, pgd10, float(large_eps))
            record["large_eps"] = dict(eps=float(large_eps), **accuracy_entry(out["correct"]))
        record["honesty"] = dict(z=z, restart_margin=restart_margin,
                                 warnings=honesty_lib.run_checks(record, z, restart_margin))
    record["seconds"] = seconds
    if return_per_example:
        record["per_example"] = per_example
    return record


def _load_classifier(workdir: str) -> Classifier:
    from fosc_jax.rundir.export import load_classifier
    if not os.path.isdir(workdir):
        raise ValueError(f"workdir {workdir!r} does not exist.")
    return load_classifier(workdir)


def evaluate_workdirs(workdirs: Sequence[str], *, num_examples: Optional[int] = None,
                      surrogate: Optional[str] = None, out: Optional[str] = None,
                      write: bool = True, data_seed: int = 0, **kwargs) -> list[dict]:
    """Evaluate the latest checkpoint of each run on its test set (see evaluate_classifier).

    Each run's record goes to RUN/eval/results.{json,csv,md} (when ``write``); with ``out``
    the combined table of all runs is written there too. ``num_examples`` picks a fixed
    random test subset (seeded by ``data_seed``). ``surrogate`` is a run directory whose
    model crafts the black-box examples. Returns the records in order.
    """
    from fosc_jax.data import load_dataset

    if not workdirs:
        raise ValueError("give at least one workdir.")
    surrogate_clf = _load_classifier(surrogate) if surrogate else None
    datasets: dict[tuple, Any] = {}
    records = []
    for workdir in workdirs:
        clf = _load_classifier(workdir)
        data_key = (config_get(clf.config, "data.source"), config_get(clf.config, "data.name"),
                    config_get(clf.config, "data.data_dir"))
        if data_key not in datasets:
            from fosc_jax.errors import data_errors
            with data_errors(f"{workdir}: data.source = {data_key[0]!r} with data.name = "
                             f"{data_key[1]!r}"):
                datasets[data_key] = load_dataset(data_key[0], data_key[1],
                                                  data_dir=data_key[2])
        ds = datasets[data_key]
        idx = eval_subset_indices(len(ds.y_test), num_examples, data_seed)
        record = evaluate_classifier(clf, ds.x_test[idx], ds.y_test[idx],
                                     surrogate=surrogate_clf, **kwargs)
        record.update(workdir=os.fspath(workdir), data_seed=data_seed,
                      subset=num_examples is not None and len(idx) < len(ds.y_test))
        if record["black_box"] is not None:
            record["black_box"]["workdir"] = os.fspath(surrogate)
        if write:
            write_results(os.path.join(workdir, "eval"), [record])
        records.append(record)
    if out is not None:
        write_results(out, records)
    return records


__all__ = ["parse_eps_list", "eval_subset_indices", "evaluate_classifier", "evaluate_workdirs"]
