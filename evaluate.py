"""Evaluate trained runs: clean, FGSM, PGD-10, PGD-20, CW-inf (+ black-box, eps sweep).

    python evaluate.py --workdir runs/mnist_dynamic [runs/mnist_standard ...]
        [--attacks fgsm,pgd10] [--eps 0.3] [--num-examples 1000]
        [--surrogate runs/mnist_surrogate] [--eps-sweep 2/255,4/255,6/255,8/255]
        [--out runs/eval_all] [--no-honesty]
    python evaluate.py --workdir RUN --attacks autoattack [--autoattack-budget cpu]

Writes RUN/eval/results.{json,csv,md} per run (and the combined table to --out) and prints
the combined Markdown table. Honesty warnings (gradient masking) are listed under it.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from fosc_jax.autoattack.runner import BUDGETS as AA_BUDGETS, canonical_name
from fosc_jax.evaluation import (DEFAULT_ATTACKS, attack_spec, evaluate_workdirs,
                                 markdown_table, parse_eps_list)
from fosc_jax.errors import cli_guard
from fosc_jax.evaluation.honesty import DEFAULT_RESTART_MARGIN, DEFAULT_Z, LARGE_EPS


def _attacks(text: str) -> list[str]:
    names = [t.strip() for t in text.split(",") if t.strip()]
    try:
        return [canonical_name(n) or attack_spec(n).name for n in names]
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _eps_list(text: str) -> list[float]:
    try:
        return parse_eps_list(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _eps(text: str) -> float:
    return _eps_list(text)[0]


def build_parser() -> argparse.ArgumentParser:
    from fosc_jax.cli_help import listing
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=listing(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", nargs="+", required=True, help="run directories")
    p.add_argument("--attacks", type=_attacks, default=list(DEFAULT_ATTACKS),
                   help="comma list of fgsm,pgd10,pgd20,cw (default: all) and/or AutoAttack: "
                        "autoattack (standard cascade), apgd-ce, apgd-dlr, apgd-t, fab-t, square")
    p.add_argument("--autoattack-budget", choices=list(AA_BUDGETS), default="standard",
                   help="standard (as published) or cpu (3 target classes, 1,000 Square "
                        "queries: NOT the standard version, labelled so in the outputs)")
    p.add_argument("--eps", type=_eps, default=None, help="override eps (e.g. 8/255)")
    p.add_argument("--step-fraction", type=float, default=None,
                   help="PGD/CW step as a fraction of eps (default 0.25)")
    p.add_argument("--num-examples", type=int, default=None,
                   help="evaluate a fixed random test subset of this size")
    p.add_argument("--surrogate", default=None, help="run whose model crafts black-box examples")
    p.add_argument("--eps-sweep", type=_eps_list, default=[], help="PGD-10 at each eps")
    p.add_argument("--batch-size", type=int, default=None, help="default: config.eval.batch_size")
    p.add_argument("--seed", type=int, default=0, help="attack random starts")
    p.add_argument("--data-seed", type=int, default=0, help="test subset choice")
    p.add_argument("--out", default=None, help="also write the combined table here")
    p.add_argument("--no-honesty", action="store_true", help="skip the gradient-masking checks")
    p.add_argument("--z", type=float, default=DEFAULT_Z, help="noise tolerance in standard errors")
    p.add_argument("--restart-margin", type=float, default=DEFAULT_RESTART_MARGIN)
    p.add_argument("--large-eps", type=float, default=LARGE_EPS)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


@cli_guard
def main(argv: Optional[Sequence[str]] = None) -> list[dict]:
    args = build_parser().parse_args(argv)
    for path in args.workdir + ([args.surrogate] if args.surrogate else []):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"run directory {path!r} does not exist; give the --workdir "
                                    "that train.py wrote.")
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
        autoattack_budget=args.autoattack_budget)
    if primary:
        print(markdown_table(records), end="")
    return records


if __name__ == "__main__":
    main(sys.argv[1:])
