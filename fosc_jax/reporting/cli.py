"""Figures from saved runs: ``python -m fosc_jax.reporting --workdir RUN [RUN ...] [--out DIR]``
(what :func:`fosc_jax.reporting.make_report` draws, with a caption per figure in
DIR/index.md; see :mod:`fosc_jax.reporting.report`)."""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from fosc_jax.reporting.report import default_out, make_report

RUN_FILES = ("config.json", "metrics.jsonl")  # one of them marks a run (or export) folder


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs, got {text!r}.") from err


def main(argv: Optional[Sequence[str]] = None) -> dict[str, str]:
    from fosc_jax.errors import cli_guard
    return cli_guard(_main)(argv)


def _default_out(runs: Sequence[str]) -> str:
    """default_out(runs), refused when a run is not a run folder (e.g. --workdir /tmp):
    the figures would land in a folder that is not the user's run."""
    from fosc_jax.errors import UsageError
    for run in runs:
        if os.path.isdir(run) and not any(os.path.exists(os.path.join(run, f))
                                          for f in RUN_FILES):
            raise UsageError(f"{run!r} is not a run directory (it has no "
                             f"{' or '.join(RUN_FILES)}), so the report would be written "
                             f"into it; give the --workdir train.py wrote, or --out DIR.")
    return default_out(runs)


def _main(argv: Optional[Sequence[str]] = None) -> dict[str, str]:
    from fosc_jax.cli_help import OneLineParser, listing
    p = OneLineParser(prog="python -m fosc_jax.reporting",
                      description=__doc__.split("\n")[0], epilog=listing(),
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", nargs="+", default=[], help="run directories (as train.py "
                   "and evaluate.py take them)")
    p.add_argument("runs", nargs="*", help="run directories (same as --workdir)")
    p.add_argument("--out", default=None, help="output folder for PNGs and index.md "
                   "(default: RUN/report, or report_A_B beside the first run)")
    p.add_argument("--epochs", type=_int_list, default=None,
                   help="epochs (1-based, as train.py prints them) for the FOSC densities "
                        "(default: 3 evenly spaced)")
    p.add_argument("--num-examples", type=int, default=None,
                   help="test subset for Figure 1 (default: full test set)")
    p.add_argument("--no-attack", action="store_true",
                   help="skip Figure 1 (needs checkpoints and test data)")
    p.add_argument("--fosc-max", type=float, default=0.1,
                   help="upper end of the Figure 1a FOSC bins (paper: 0.1)")
    p.add_argument("--data", default=None, metavar="DIR|bundled|tfds|files:DIR",
                   help="where the test data for Figure 1 is (as evaluate.py --data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    runs = list(args.workdir) + list(args.runs)
    if not runs:
        p.error("give the run directories with --workdir RUN [RUN ...]")
    out = args.out or _default_out(runs)
    made = make_report(runs, out, epochs=args.epochs, data=args.data,
                       attack_figures=not args.no_attack, num_examples=args.num_examples,
                       seed=args.seed, progress=not args.quiet, fosc_max=args.fosc_max)
    print(f"wrote {len(made)} figures and {os.path.join(out, 'index.md')}")
    return made

