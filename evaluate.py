"""Evaluate trained runs: clean, FGSM, PGD-10, PGD-20, CW-inf (+ black-box, eps sweep).

    python evaluate.py --workdir runs/mnist_dynamic [runs/mnist_standard ...]
        [--attacks fgsm,pgd10] [--eps 0.3] [--num-examples 1000]
        [--surrogate runs/mnist_surrogate] [--eps-sweep 2/255,4/255,6/255,8/255]
        [--out runs/eval_all] [--no-honesty] [--data DIR]
    python evaluate.py --workdir RUN --attacks autoattack [--autoattack-budget cpu]

Writes RUN/eval/results.{json,csv,md} per run (and the combined table to --out), says
where, and prints the combined Markdown table. Honesty warnings (gradient masking) are
listed under it. A killed evaluation rerun with the same flags resumes after the last
finished attack (RUN/eval/partial/).
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from typing import Optional, Sequence

from fosc_jax.autoattack.runner import BUDGETS as AA_BUDGETS
from fosc_jax.evaluation import (DEFAULT_ATTACKS, evaluate_workdirs, markdown_table,
                                 parse_eps_list)
from fosc_jax.errors import UsageError, cli_guard
from fosc_jax.evaluation.honesty import DEFAULT_RESTART_MARGIN, DEFAULT_Z, LARGE_EPS
from fosc_jax.evaluation.suite import accepted_attacks, canonical_attack


# ------------------------------------------------------------ flag values (checked on parsing)
def _attacks(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    accepted = ", ".join(n for n, _ in accepted_attacks())
    if not names:
        raise argparse.ArgumentTypeError(f"no attack named in {text!r}; give a comma list "
                                         f"of {accepted}.")
    try:
        out = [canonical_attack(n) for n in names]
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err
    repeated = sorted({n for n in out if out.count(n) > 1})
    if repeated:
        raise argparse.ArgumentTypeError(f"{', '.join(repeated)} named twice in {text!r}; "
                                         "name each attack once.")
    return out


def _number(text: str, kind=float, low: float = -math.inf, low_ok: bool = True,
            high: float = math.inf, what: str = "a number"):
    """``kind(text)``, finite and within [low or (low, high]; else a one-line flag error."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value < low or (
            value == low and not low_ok) or value > high:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}.")
    return value


def _count(text: str) -> int:
    return _number(text, int, 1, what="a whole number >= 1")


def _seed(text: str) -> int:
    return _number(text, int, 0, what="a whole number >= 0")


def _positive(text: str) -> float:
    return _number(text, float, 0.0, low_ok=False, what="a finite number > 0")


def _margin(text: str) -> float:
    return _number(text, float, 0.0, high=1.0, what="a finite fraction in [0, 1]")


def _eps_list(text: str) -> list[float]:
    try:
        return parse_eps_list(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _eps(text: str) -> float:
    return _eps_list(text)[0]


def build_parser() -> argparse.ArgumentParser:
    from fosc_jax.cli_help import OneLineParser, listing
    from fosc_jax.data.sources import DATA_DIR_ENV
    p = OneLineParser(prog="python evaluate.py", description=__doc__.split("\n\n")[0],
                      epilog=listing(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", nargs="+", required=True, help="run directories")
    p.add_argument("--attacks", type=_attacks, default=list(DEFAULT_ATTACKS),
                   help="comma list of " + ",".join(n for n, _ in accepted_attacks())
                   + f" (default: {','.join(DEFAULT_ATTACKS)}; autoattack is the standard "
                   "cascade, the others one attack alone)")
    p.add_argument("--data", default=None, metavar="DIR|bundled|tfds|files:DIR",
                   help="where the test data is on this machine (run files record 'files' "
                        "without a folder); default: the run's source, for 'files' the folder "
                        "in " + " / ".join(DATA_DIR_ENV.values()))
    p.add_argument("--autoattack-budget", choices=list(AA_BUDGETS), default="standard",
                   help="standard (as published) or cpu (3 target classes, 1,000 Square "
                        "queries: NOT the standard version, labelled so in the outputs)")
    p.add_argument("--eps", type=_eps, default=None, help="override eps (e.g. 8/255)")
    p.add_argument("--step-fraction", type=_positive, default=None,
                   help="PGD/CW step as a fraction of eps (default 0.25)")
    p.add_argument("--num-examples", type=_count, default=None,
                   help="evaluate a fixed random test subset of this size")
    p.add_argument("--surrogate", default=None, help="run whose model crafts black-box examples")
    p.add_argument("--eps-sweep", type=_eps_list, default=[], help="PGD-10 at each eps")
    p.add_argument("--batch-size", type=_count, default=None,
                   help="default: config.eval.batch_size")
    p.add_argument("--seed", type=_seed, default=0, help="attack random starts")
    p.add_argument("--data-seed", type=_seed, default=0, help="test subset choice")
    p.add_argument("--out", default=None, help="also write the combined table to this folder")
    p.add_argument("--no-honesty", action="store_true", help="skip the gradient-masking checks")
    p.add_argument("--z", type=_positive, default=DEFAULT_Z,
                   help="noise tolerance in standard errors")
    p.add_argument("--restart-margin", type=_margin, default=DEFAULT_RESTART_MARGIN)
    p.add_argument("--large-eps", type=_eps, default=LARGE_EPS,
                   help="eps of the large-eps honesty check, in (0, 1]")
    p.add_argument("--no-resume", action="store_true",
                   help="recompute every attack (ignore RUN/eval/partial/)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


# ------------------------------------------------------------ paths (checked before compute)
def _writable_folder(path: str, what: str) -> None:
    """Refuse ``path`` unless it is (or can become) a folder this process can write into:
    a file there, or a read-only place, fails now rather than after the attacks."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{what} {path!r} is a file, not a folder; give a folder (it is "
                         "created if missing).")
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise UsageError(f"{what} {path!r} cannot be created: {probe!r} is a file.")
    try:  # a real write: os.access says yes for root even on a read-only file system
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".fosc_jax_write_test_")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise UsageError(f"{what} {path!r} is not writable ({err.strerror} in {probe!r}); "
                         "make it writable or choose another place.") from err


def check_paths(args: argparse.Namespace) -> None:
    """Every path the command reads or writes, before any compute."""
    for path in args.workdir + ([args.surrogate] if args.surrogate else []):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"run directory {path!r} does not exist; give the --workdir "
                                    "that train.py wrote.")
    for path in args.workdir:
        _writable_folder(os.path.join(path, "eval"), f"the results folder of --workdir {path}:")
    if args.out is not None:
        _writable_folder(args.out, "--out")
    from fosc_jax.evaluation.api import data_location
    from fosc_jax.rundir.config_file import load_config
    for path in args.workdir:  # the data can be found (reads config.json only)
        data_location(path, load_config(path), args.data)
    if args.data and args.data not in ("bundled", "tfds"):
        folder = args.data[len("files:"):] if args.data.startswith("files:") else args.data
        if not os.path.exists(folder):
            raise FileNotFoundError(f"--data {args.data!r}: {folder!r} does not exist; give the "
                                    "folder holding the data set's files.")


@cli_guard
def main(argv: Optional[Sequence[str]] = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    check_paths(args)
    import jax

    from fosc_jax import cpu_malloc, parallel
    parallel.maybe_initialize_distributed()  # several processes: only process 0 writes
    cpu_malloc.keep_freed_memory_on_cpu(jax.default_backend())  # this process only
    primary = parallel.is_primary()
    records = evaluate_workdirs(
        args.workdir, num_examples=args.num_examples, surrogate=args.surrogate,
        out=args.out if primary else None, write=primary,
        data_seed=args.data_seed, attacks=args.attacks, eps=args.eps,
        step_fraction=args.step_fraction, batch_size=args.batch_size, seed=args.seed,
        eps_sweep=args.eps_sweep, honesty=not args.no_honesty, large_eps=args.large_eps,
        z=args.z, restart_margin=args.restart_margin, progress=not args.quiet,
        autoattack_budget=args.autoattack_budget, data=args.data, resume=not args.no_resume)
    if primary:
        print(markdown_table(records), end="")
    return records


if __name__ == "__main__":
    main(sys.argv[1:])
