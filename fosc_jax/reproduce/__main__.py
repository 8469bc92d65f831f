"""python -m fosc_jax.reproduce mnist --scale cpu --out results/mnist_cpu

Runs one of the paper's experiments end to end. mnist: trains Unsecured, Standard (5 seeds),
Curriculum, Dynamic (5 seeds), a separately seeded Standard-AT surrogate, a short run without
the eps-0.3 collapse remedy and the ten runs of the paper's Section 3; evaluates them
white-box, black-box and with AutoAttack; cross-tests the Section 3 models; writes the seed
statistics. cifar: trains Unsecured, Standard, Curriculum, Dynamic and a naturally trained
ResNet-50 surrogate; evaluates them white-box and black-box. Both export the final models,
draw the figures and write OUT/RESULTS.md. Rerun the same command after any interruption:
finished runs, exports and evaluations are skipped, training resumes.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence

# Exit status of a reproduction stopped by SIGTERM/SIGINT (checkpointed; rerun to resume):
# EX_TEMPFAIL, so a scheduler or a script retries instead of taking it for success.
EXIT_STOPPED = 75


def build_parser() -> argparse.ArgumentParser:
    from fosc_jax.reproduce.experiments import EXPERIMENTS
    p = argparse.ArgumentParser(prog="python -m fosc_jax.reproduce",
                                description=__doc__.split("\n\n")[1].replace("\n", " "))
    p.add_argument("experiment", choices=sorted(EXPERIMENTS),
                   help="the paper's experiment to reproduce")
    p.add_argument("--scale", choices=sorted({s for e in EXPERIMENTS.values() for s in e.scales}),
                   default="cpu", help="; ".join(f"{e.name} {k}: {v.about}"
                                                 for e in EXPERIMENTS.values()
                                                 for k, v in e.scales.items()))
    p.add_argument("--out", default=None,
                   help="output folder (default results/EXPERIMENT_SCALE)")
    p.add_argument("--data", default=None,
                   help="; ".join(f"{e.name}: {e.data_help} (default ${e.data_env})"
                                  + (", or 'bundled' for the 2,000-image subset shipped in the "
                                     "package" if e.bundled else "")
                                  for e in EXPERIMENTS.values()))
    p.add_argument("--stages", default=None,
                   help="comma-separated subset of the experiment's stages (default: all of "
                        "them); " + "; ".join(f"{e.name}: {','.join(e.stages)}"
                                              for e in EXPERIMENTS.values()))
    p.add_argument("--runs", default=None,
                   help="comma-separated subset of the runs to work on (default: all); "
                        "names as in fosc_jax/reproduce/plan.py (mnist) and cifar_plan.py")
    p.add_argument("--readme", default="README.md",
                   help="README whose reproduction table (between its markers) is rewritten "
                        "with the results; skipped when the file has no markers")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="stop cleanly (checkpointed, resumable) before this many seconds of "
                        "wall time; exit status 75 when stopped early")
    p.add_argument("--time-margin", type=float, default=60.0, metavar="SECONDS",
                   help="seconds of the budget kept for the last checkpoint and the archive "
                        "(default 60)")
    p.add_argument("--archive", default=None, metavar="FILE",
                   help="pack the output folder into FILE (.tar.gz volumes of at most 16 MiB: "
                        "FILE, then FILE.TAG.part2 ... beside it) when the command ends, "
                        "finished or stopped: all a fresh machine needs to continue")
    p.add_argument("--archive-volumes", type=int, default=1, metavar="N",
                   help="most volumes --archive may write (default 1); a command whose archive "
                        "would need more at its largest is refused before it trains")
    p.add_argument("--from-archive", default=None, metavar="FILE",
                   help="first unpack FILE and its volumes (written by --archive) into the "
                        "empty output folder; a missing or damaged volume is refused first")
    p.add_argument("--check-only", action="store_true",
                   help="check the flags, the data, the --from-archive volumes and the "
                        "archive's projected size, then exit (0: all is well) without computing")
    p.add_argument("--one-program", choices=("auto", "yes", "no"), default="auto",
                   help="train runs that can share one compiled program (the seeds of "
                        "Standard and Dynamic, the Section 3 sweeps) side by side with jax.vmap; "
                        "auto: yes on accelerators, no on the CPU, where it measured slower")
    p.add_argument("--smoke", action="store_true",
                   help="shrink the scale to a few hundred images and 2 epochs (tests)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    import dataclasses

    from fosc_jax.reproduce.experiments import EXPERIMENTS

    args = build_parser().parse_args(argv)
    exp = EXPERIMENTS[args.experiment]
    stages, runs, problem = _choose(exp, args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    scale = exp.scales[args.scale]
    if args.smoke:
        scale = dataclasses.replace(scale, name=f"{scale.name}-smoke", **exp.smoke)
    data = args.data if args.data is not None else os.environ.get(exp.data_env, "")
    problem = _check_data(exp, data)
    if problem:
        print(f"error: --data: {problem}", file=sys.stderr)
        return 2
    source = "bundled" if data == "bundled" else f"files:{os.path.abspath(data)}"
    out = args.out or os.path.join("results", f"{exp.name}_{scale.name}")
    from fosc_jax.reproduce import archive
    problem = _check_budget_args(args, out)
    if not problem and args.archive:
        from fosc_jax.reproduce.archive_size import refusal
        problem = refusal(runs, scale, source, out, args.one_program, args.archive_volumes,
                          archive.volume_bytes())
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.check_only:
        return 0
    from fosc_jax.reproduce.budget import StopFlag
    flag = StopFlag(args.time_budget, args.time_margin)
    if args.from_archive:
        n = archive.unpack(args.from_archive, out)
        print(f"unpacked {n} files from {args.from_archive} into {out}", flush=True)
    os.makedirs(out, exist_ok=True)
    try:
        code = _run_stages(args, exp, stages, runs, scale, source, out, flag)
    finally:
        flag.restore()
    if args.archive:
        try:
            packed = archive.pack(out, args.archive, archive.volume_bytes(), args.archive_volumes)
        except archive.ArchiveError as err:
            print(f"error: --archive: {err} Everything stays in {out}.", file=sys.stderr)
            return 1
        print(f"packed {out} into {packed.describe()}; continue with --from-archive "
              f"{args.archive} in a fresh folder", flush=True)
    return code


def _choose(exp, args) -> tuple[list, tuple, Optional[str]]:
    """The stages and runs asked for, checked against what ``exp`` offers; (stages, runs,
    None), or a line saying what is wrong."""
    stages = ([s.strip() for s in args.stages.split(",") if s.strip()]
              if args.stages is not None else list(exp.stages))
    bad = [s for s in stages if s not in exp.stages]
    if bad or not stages:
        return [], (), (f"--stages: unknown {bad or 'empty list'} for {exp.name}; accepted: "
                        f"{','.join(exp.stages)}")
    if args.scale not in exp.scales:
        return [], (), (f"--scale: {exp.name} has no scale {args.scale!r}; accepted: "
                        f"{','.join(exp.scales)}")
    if args.runs is None:
        return stages, exp.runs, None
    wanted = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in {run.name for run in exp.runs}]
    if unknown or not wanted:
        return [], (), (f"--runs: unknown {unknown or 'empty list'} for {exp.name}; accepted: "
                        f"{','.join(r.name for r in exp.runs)}")
    return stages, tuple(r for r in exp.runs if r.name in wanted), None


def _check_data(exp, data: str) -> Optional[str]:
    """What is wrong with the data location ``data`` for ``exp`` (None: nothing)."""
    if not data:
        return (f"no {exp.title} data given and ${exp.data_env} is not set; pass --data DIR "
                f"({exp.data_help})" + (" or --data bundled" if exp.bundled else ""))
    if data == "bundled":
        return None if exp.bundled else (f"{exp.title} has no bundled subset; pass --data DIR "
                                         f"({exp.data_help})")
    if os.path.isdir(data) or (not exp.bundled and os.path.isfile(data)
                               and data.endswith(".npz")):
        return None
    return f"{data!r} is not a folder" + ("" if exp.bundled else " or an .npz file")


def _command(args) -> str:
    """The command that regenerates this output, as RESULTS.md quotes it: the data folder as
    the environment variable and the output folder as given when relative, so no path of
    this machine is written."""
    from fosc_jax.reproduce.experiments import EXPERIMENTS
    parts = ["python -m fosc_jax.reproduce", args.experiment, "--scale", args.scale]
    parts += ["--smoke"] if args.smoke else []
    env = EXPERIMENTS[args.experiment].data_env
    parts += ["--data", "bundled" if args.data == "bundled" else f'"${env}"']
    if args.out and not os.path.isabs(args.out):
        parts += ["--out", args.out]
    return " ".join(parts)


def _check_budget_args(args, out: str) -> Optional[str]:
    """One line saying what is wrong with the budget/archive flags, or None."""
    import math

    from fosc_jax.reproduce import archive
    if args.time_budget is not None and not (math.isfinite(args.time_budget)
                                             and args.time_budget > 0):
        return f"--time-budget: {args.time_budget} is not a positive number of seconds"
    if not (math.isfinite(args.time_margin) and args.time_margin >= 0):
        return f"--time-margin: {args.time_margin} is not a number of seconds >= 0"
    if args.from_archive:
        if not os.path.isfile(args.from_archive):
            return f"--from-archive: {args.from_archive!r} is not a file"
        if os.path.isdir(out) and os.listdir(out):
            return (f"--from-archive: the output folder {out!r} is not empty; unpack into a "
                    "fresh folder (--out NEW), or drop --from-archive to continue in place")
        problem = archive.check_set(args.from_archive)
        if problem:
            return f"--from-archive: {problem}"
    if args.archive and os.path.isdir(args.archive):
        return f"--archive: {args.archive!r} is a folder; give a file name such as run.tar.gz"
    if args.archive_volumes < 1:
        return f"--archive-volumes: {args.archive_volumes} is not a whole number >= 1"
    if args.archive:
        try:
            archive.volume_bytes()
        except archive.ArchiveError as err:
            return str(err)
    return None


def _run_stages(args, exp, stages, runs, scale, source, out, flag) -> int:
    import jax

    from fosc_jax import cpu_malloc, parallel
    from fosc_jax.reproduce import extra_stages, pipeline
    parallel.maybe_initialize_distributed()
    cpu_malloc.keep_freed_memory_on_cpu(jax.default_backend())  # this process only
    log = lambda msg: print(f"{time.strftime('%H:%M:%S')} {msg}", flush=True)  # noqa: E731
    log(f"reproduce {exp.name}, scale {scale.name}: "
        f"{scale.train_images or exp.schedule.train_images} training images, "
        f"{scale.epochs} epochs, {scale.test_images or 10000} test images -> {out}")
    def stopped() -> bool:
        if flag():
            log(f"stopped by {flag.reason}; rerun the same command to continue")
        return flag()

    from fosc_jax.training.multirun import pays_on
    together = (args.one_program == "yes"
                or (args.one_program == "auto" and pays_on(jax.default_backend())))
    if "train" in stages and not pipeline.train_all(runs, scale, source, out, log=log,
                                                    should_stop=flag, together=together):
        stopped()
        return EXIT_STOPPED
    if "export" in stages:
        pipeline.export_all(runs, scale, out, log=log)
    if {"eval", "autoattack", "section3", "report"} & set(stages):
        from fosc_jax.data import load_dataset
        ds = load_dataset(source, exp.dataset)
    if "eval" in stages:
        pipeline.evaluate_all(runs, scale, ds, out, log=log, stop=flag)
    if "autoattack" in stages:
        extra_stages.autoattack_all(runs, scale, ds, out, log=log, stop=flag)
    if "section3" in stages:
        from fosc_jax.reproduce import section3
        section3.evaluate_section3(runs, scale, ds, out, log=log, stop=flag)
    if "convergence" in stages:
        extra_stages.convergence_all(runs, scale, source, out, log=log, stop=flag)
    if stopped():
        return EXIT_STOPPED
    if "report" in stages:
        from fosc_jax.reproduce import report
        path = report.write_report(runs, scale, ds, out, command=_command(args),
                                   readme=None if args.smoke else args.readme, log=log)
        log(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
