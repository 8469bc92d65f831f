"""The shared tail of ``--help`` for train.py, evaluate.py and the report: configs, data
sources and attacks, listed from the repository and the registries (never a stale copy)."""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

CONFIG_DIR: Path = Path(__file__).resolve().parents[1] / "configs"
DATA_SOURCES: tuple[tuple[str, str], ...] = (
    ("tfds", "tensorflow-datasets mnist / cifar10, prepared beforehand (runs never download)"),
    ("files:DIR", "MNIST IDX files, the CIFAR-10 binary release, or an .npz with "
                  "x_train, y_train, x_test, y_test"),
    ("bundled", "2,000 train / 500 test MNIST images shipped in the package"),
)


def config_files(folder: Path = CONFIG_DIR) -> list[tuple[str, str]]:
    """(path relative to the repository, first docstring line) of every config file."""
    out = []
    for path in sorted(folder.glob("*.py")):
        try:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        except SyntaxError:
            doc = ""
        out.append((f"configs/{path.name}", doc.strip().split("\n")[0]))
    return out


def attack_names() -> list[tuple[str, str]]:
    """(name, label) of every evaluation attack, AutoAttack and its parts included."""
    from fosc_jax.evaluation.suite import accepted_attacks
    return accepted_attacks()


def listing() -> str:
    """Configs, data sources (--config.data.source) and attacks (evaluate.py --attacks)."""
    configs = config_files()
    lines = ["configs:"]
    lines += ([f"  {p:32s} {d}" for p, d in configs] if configs else
              ["  configs/*.py in the repository (not found next to this installation)"])
    lines += ["data sources (--config.data.source=...):"]
    lines += [f"  {n:32s} {d}" for n, d in DATA_SOURCES]
    lines += ["attacks (evaluate.py --attacks a,b,...):"]
    lines += [f"  {n:32s} {label}" for n, label in attack_names()]
    return "\n".join(lines)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one ``error: ...`` line (status 2), like every other user
    error of the CLIs (argparse's own prints the usage first)."""

    def error(self, message: str):
        from fosc_jax.errors import EXIT_USER_ERROR, one_line
        print(one_line(ValueError(f"{message} ({self.prog} --help lists the flags)")),
              file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR)
