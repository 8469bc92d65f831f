#!/usr/bin/env bash
# One time-boxed piece of the paper-scale reproduction on an accelerator host without network.
#
#   tools/accelerator_run.sh OUTDIR [ARCHIVE]
#
# Run from the repository root. It
#   1. installs what the host lacks (ml-collections) from a local wheelhouse, no network;
#   2. checks the device (devices seen; the in-graph early exit equals the unrolled loop; a
#      bfloat16 step is finite) and stops if a check fails;
#   3. records the step benchmark's rows for BENCHMARKS.md (skip with FOSC_JAX_BENCH=0);
#   4. runs the reproduction under a wall-time budget, continuing from ARCHIVE if given;
#   5. leaves at most 8 files of at most 16 MiB in OUTDIR: the archive's volumes
#      (archive.tar.gz, then archive.tar.gz.TAG.part2 ... beside it: pass archive.tar.gz back
#      as ARCHIVE next time, its parts beside it), RESULTS.md, device_check.json,
#      bench_step.json, run.log. That leaves 4 volumes, of 16 MiB less 256 KiB so that
#      everything stays within the 64 MiB that come back from a device call; a reproduction
#      whose archive would need more is refused before the device check (one line naming
#      the largest contributors), as is an ARCHIVE whose volumes are incomplete.
#
# Settings (environment):
#   FOSC_JAX_BUDGET      seconds for the reproduction (default 420; the whole script stays
#                        within about BUDGET + 3 minutes of checks and benchmark)
#   FOSC_JAX_REPRODUCE   reproduction arguments (default: "mnist --scale paper --one-program
#                        no": with runs grouped in one program the archive reaches 66 MiB)
#   FOSC_JAX_MNIST_DIR   the four MNIST IDX files (default: bundled subset is NOT used)
#   FOSC_JAX_WHEELHOUSE  folder of wheels for missing packages (default: wheelhouse/)
#   FOSC_JAX_BENCH       0 skips the benchmark; "quick" runs its smoke size
#   FOSC_JAX_ARCHIVE_VOLUME_BYTES  volume size (default 16 MiB - 256 KiB; tests force less)
#
# The wheelhouse, built once on a machine with network for the host's Python (3.12 here):
#   pip download --only-binary=:all: --python-version 3.12 --no-deps -d wheelhouse \
#       "ml-collections>=1.0,<2" absl-py PyYAML
# (ml-collections needs only absl-py and PyYAML, which jax and orbax bring; docs/accelerators.md)
set -euo pipefail

OUTDIR=${1:?usage: tools/accelerator_run.sh OUTDIR [ARCHIVE]}
ARCHIVE=${2:-}
BUDGET=${FOSC_JAX_BUDGET:-420}
REPRO_ARGS=${FOSC_JAX_REPRODUCE:-"mnist --scale paper --one-program no"}
WHEELS=${FOSC_JAX_WHEELHOUSE:-wheelhouse}
BENCH=${FOSC_JAX_BENCH:-1}
PY=${PYTHON:-python3}
# OUTDIR holds at most 8 files, 64 MiB together: run.log, device_check.json, RESULTS.md,
# bench_step.json and 4 archive volumes, each 256 KiB short of 16 MiB.
VOLUMES=4
export FOSC_JAX_ARCHIVE_VOLUME_BYTES=${FOSC_JAX_ARCHIVE_VOLUME_BYTES:-$((16 * 1024 * 1024 - 256 * 1024))}

mkdir -p "$OUTDIR"
OUTDIR=$(cd "$OUTDIR" && pwd)
LOG="$OUTDIR/run.log"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$(pwd)${PYTHONPATH:+:$PYTHONPATH}"
say() { echo "$(date +%H:%M:%S) $*" | tee -a "$LOG"; }

say "accelerator run: budget ${BUDGET}s, reproduce ${REPRO_ARGS}, archive in: ${ARCHIVE:-none}"
FROM=()
[ -n "$ARCHIVE" ] && FROM=(--from-archive "$ARCHIVE")
# shellcheck disable=SC2086
REPRO=("$PY" -m fosc_jax.reproduce $REPRO_ARGS --out "$WORK/repro" --readme none
       --time-budget "$BUDGET" --archive "$OUTDIR/archive.tar.gz" --archive-volumes "$VOLUMES"
       "${FROM[@]}")
if ! "$PY" -c "import ml_collections" 2>/dev/null; then
    [ -d "$WHEELS" ] || { say "error: ml-collections is missing and no wheelhouse at $WHEELS"; exit 2; }
    "$PY" -m pip install -q --no-index --find-links "$WHEELS" "ml-collections>=1.0,<2" >>"$LOG" 2>&1
    say "installed ml-collections from $WHEELS"
fi

# Flags, the incoming volumes and the archive's projected size, before any compute.
if ! ERR=$("${REPRO[@]}" --check-only 2>&1 >>"$LOG"); then
    echo "$ERR" >>"$LOG"
    LINE=$(echo "$ERR" | grep '^error:' | tail -n 1)
    say "${LINE:-error: the check of the reproduction failed (see run.log)}"
    exit 2
fi

say "device check"
"$PY" tools/device_check.py --json "$OUTDIR/device_check.json" >>"$LOG" 2>&1 \
    || { say "error: device check failed (see device_check.json)"; exit 1; }

case "$BENCH" in
    0) say "benchmark skipped" ;;
    quick) "$PY" benchmarks/bench_step.py --quick --no-torch --json "$OUTDIR/bench_step.json" >>"$LOG" 2>&1 ;;
    *) "$PY" benchmarks/bench_step.py --models mnist_cnn,cifar_cnn --batches 128 --repeats 3 \
           --no-torch --json "$OUTDIR/bench_step.json" >>"$LOG" 2>&1 ;;
esac

say "reproduce"
set +e
"${REPRO[@]}" >>"$LOG" 2>&1
CODE=$?
set -e
[ -f "$WORK/repro/RESULTS.md" ] && cp "$WORK/repro/RESULTS.md" "$OUTDIR/RESULTS.md"
case $CODE in
    0) say "done: the reproduction finished" ;;
    75) say "stopped at the budget: continue with tools/accelerator_run.sh NEW_OUTDIR $OUTDIR/archive.tar.gz (its volumes beside it)" ;;
    *) say "error: the reproduction exited $CODE: $(grep '^error:' "$LOG" | tail -n 1 | cut -c 8-) (see run.log)"; exit $CODE ;;
esac
