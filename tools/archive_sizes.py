"""Measure the reproduction's archive at its largest (the table in docs/accelerators.md).

Trains each model for two steps with the real trainer on random images, so its checkpoint
holds what a run in progress leaves (weights, BatchNorm statistics, SGD momentum), exports
it, then builds output folders from those files and the committed results/mnist_cpu
(trained MNIST exports, FOSC samples, evaluations, figures), packs each with the real
``archive.pack`` and prints its size and 16 MiB volumes next to the projection that the
reproduction checks before it trains (fosc_jax/reproduce/archive_size.py).

    python tools/archive_sizes.py [--work DIR]      # about 6 minutes on 2 CPU cores
"""
from __future__ import annotations

import argparse
import glob
import gzip
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fosc_jax.reproduce import archive, archive_size  # noqa: E402

RESULTS = "results/mnist_cpu"
CIFAR_EPOCHS = 120
CIFAR_DEFENSES = ("unsecured", "standard", "dynamic", "curriculum")


def _config(model: str):
    from fosc_jax.config import cifar_config, mnist_config
    c = mnist_config("unsecured") if model == "mnist_cnn" else cifar_config("unsecured")
    c.model.name = model
    c.batch_size, c.num_epochs, c.quiet = 8, 1, True
    c.eval.num_examples = c.eval.batch_size = 8
    c.data.augment = "none"
    return c


def tiny_run(model: str, work: str) -> tuple[str, str]:
    """(newest checkpoint step folder, export folder) of a two-step run of ``model``."""
    from fosc_jax import rundir
    from fosc_jax.data.dataset import Dataset
    from fosc_jax.training import train_and_evaluate

    config = _config(model)
    shape = (28, 28, 1) if model == "mnist_cnn" else (32, 32, 3)
    rng = np.random.default_rng(0)
    image = lambda n: rng.integers(0, 256, (n,) + shape, dtype=np.uint8)  # noqa: E731
    label = lambda n: rng.integers(0, 10, n).astype(np.int32)  # noqa: E731
    ds = Dataset(name=config.data.name, x_train=image(16), y_train=label(16), x_test=image(8),
                 y_test=label(8), num_classes=10)
    wd, export = os.path.join(work, "runs", model), os.path.join(work, "models", model)
    train_and_evaluate(config, wd, dataset=ds)
    rundir.export_classifier(wd, export)
    ck = os.path.join(wd, archive.CHECKPOINT_DIR)
    return os.path.join(ck, max(os.listdir(ck), key=int)), export


def _bytes(path: str) -> tuple[int, int]:
    """(bytes, gzipped bytes) of a file or of every file under a folder."""
    files = [path] if os.path.isfile(path) else [
        os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs]
    raw = sum(os.path.getsize(f) for f in files)
    return raw, sum(len(gzip.compress(open(f, "rb").read(), 6)) for f in files)


def build(tree: str, exports, checkpoints, fosc) -> None:
    """An output folder: exported models [(name, src)], checkpoints in progress
    [(name, step folder)], FOSC samples [(name, epochs)] and the committed reports."""
    samples = sorted(glob.glob(os.path.join(RESULTS, "runs", "*", "fosc", "*.npz")))
    for name, src in exports:
        shutil.copytree(src, os.path.join(tree, "models", name))
    for name, src in checkpoints:
        shutil.copytree(src, os.path.join(tree, "runs", name, "checkpoints",
                                          os.path.basename(src)))
    k = 0
    for name, epochs in fosc:
        for e in range(1, epochs + 1):
            dst = os.path.join(tree, "runs", name, "fosc", f"epoch_{e:04d}.npz")
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy(samples[k % len(samples)], dst)
            k += 1
    for extra in ("eval", "figures", "RESULTS.md", "provenance.json"):
        src = os.path.join(RESULTS, extra)
        (shutil.copytree if os.path.isdir(src) else shutil.copy)(
            src, os.path.join(tree, extra))


def measure(work: str, label: str, order, at, export_of, checkpoint_of, epochs_of) -> str:
    """Build the output folder of moment ``at`` of the training ``order`` (groups of
    RunBytes), pack it, and give its table row (measured, volumes, projected)."""
    done = [r.name for g in order[:at.index] for r in g]
    busy = [r.name for r in order[at.index]] if at.index < len(order) else []
    tree, target = os.path.join(work, "tree"), os.path.join(work, "packed", "a.tar.gz")
    build(tree, [(n, export_of(n)) for n in done], [(n, checkpoint_of(n)) for n in busy],
          [(n, epochs_of(n)) for n in done + busy])
    try:
        packed = archive.pack(tree, target, max_volumes=10 ** 6)
        return (f"| {label}, {at.when} | {archive.mib(packed.size)} | {len(packed.files)} | "
                f"{archive.mib(at.size)} |")
    finally:
        shutil.rmtree(tree)
        shutil.rmtree(os.path.dirname(target))


def _mnist_rows(work: str, checkpoint: str) -> list[str]:
    from fosc_jax.reproduce import plan
    scale = plan.SCALES["paper"]
    trained = sorted(glob.glob(os.path.join(RESULTS, "models", "*")))
    configs = {r.name: plan.run_config(r, scale, "bundled") for r in plan.RUNS}
    names = list(configs)
    export_of = lambda n: trained[names.index(n) % len(trained)]  # noqa: E731
    epochs_of = lambda n: int(configs[n].num_epochs)  # noqa: E731
    rows = []
    for together, label in ((False, "MNIST paper, one run at a time (--one-program no)"),
                            (True, "MNIST paper, groups in one program (accelerators)")):
        order = [[archive_size.run_bytes(r.name, configs[r.name]) for r in g] for g in
                 archive_size.training_order(plan.RUNS, scale, "bundled", "/nonexistent",
                                             together)]
        rows.append(measure(work, label, order, archive_size.peak(order), export_of,
                            lambda n: checkpoint, epochs_of))
    rows.append(measure(work, "MNIST paper, finished", order, archive_size.moments(order)[-1],
                        export_of, lambda n: checkpoint, epochs_of))
    return rows


def _cifar_rows(work: str, runs: dict) -> list[str]:
    from fosc_jax.config import cifar_config
    cnn = [archive_size.run_bytes(d, cifar_config(d)) for d in CIFAR_DEFENSES]
    surrogate = cifar_config("standard")
    surrogate.model.name = "resnet50"
    r50 = archive_size.run_bytes("surrogate", surrogate)
    model = lambda n: "resnet50" if n == "surrogate" else "cifar_cnn"  # noqa: E731
    export_of, checkpoint_of = (lambda n: runs[model(n)][1]), (lambda n: runs[model(n)][0])
    alone, grouped = [[c] for c in cnn], [cnn]
    with_r50 = alone + [[r50]]
    rows = []
    for label, order, at in (
            ("CIFAR paper, 4 CNN8 defenses one at a time", alone, archive_size.peak(alone)),
            ("CIFAR paper, 4 CNN8 defenses in one program", grouped, archive_size.peak(grouped)),
            ("CIFAR paper, 4 CNN8 + the ResNet-50 surrogate", with_r50,
             archive_size.peak(with_r50)),
            ("CIFAR paper, 4 CNN8 + the ResNet-50 surrogate, finished", with_r50,
             archive_size.moments(with_r50)[-1])):
        rows.append(measure(work, label, order, at, export_of, checkpoint_of,
                            lambda n: CIFAR_EPOCHS))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args(argv)
    work = args.work or tempfile.mkdtemp(prefix="archive_sizes_")
    runs = {m: tiny_run(m, os.path.join(work, "tiny")) for m in
            ("mnist_cnn", "cifar_cnn", "resnet50")}
    print("| file | bytes | gzipped | ratio |\n|---|---|---|---|")
    for model, (ck, ex) in runs.items():
        for what, path in (("checkpoint in progress", ck),
                           ("exported model", os.path.join(ex, "variables.npz"))):
            raw, gz = _bytes(path)
            print(f"| {model} {what} | {archive.mib(raw)} | {archive.mib(gz)} | {gz / raw:.3f} |")
    for what, pattern in (("trained MNIST exports (results/mnist_cpu)", "models/*/variables.npz"),
                          ("FOSC samples (results/mnist_cpu)", "runs/*/fosc/*.npz")):
        sizes = [_bytes(f) for f in glob.glob(os.path.join(RESULTS, pattern))]
        raw, gz = sum(s[0] for s in sizes), sum(s[1] for s in sizes)
        print(f"| {what} | {archive.mib(raw)} | {archive.mib(gz)} | {gz / raw:.3f} |")
    print("\n| state | archive | 16 MiB volumes | projected |\n|---|---|---|---|")
    for row in _mnist_rows(work, runs["mnist_cnn"][0]) + _cifar_rows(work, runs):
        print(row, flush=True)
    if not args.work:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
