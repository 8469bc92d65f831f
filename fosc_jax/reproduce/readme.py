"""The README's reproduction table: the white-box rows of RESULTS.md between an experiment's
markers (``Experiment.readme_markers``), rewritten by the report stage."""
from __future__ import annotations

import os
from typing import Optional, Sequence

from fosc_jax.rundir.integrity import atomic_write_text

# The MNIST table's markers (experiments.MNIST.readme_markers).
README_START = "<!-- reproduction table: start (written by python -m fosc_jax.reproduce) -->"
README_END = "<!-- reproduction table: end -->"


def readme_table(head: str, rows: Sequence[str], summary: Optional[str] = None) -> str:
    """The block between the markers: a sentence saying what and where from, the rows, and
    the seed verdict with its interval when there is one."""
    return "\n".join([head, ""] + list(rows)
                     + ([] if not summary else ["", f"**Verdict.** {summary}"]))


def update_readme(path: str, table: str,
                  markers: tuple[str, str] = (README_START, README_END)) -> bool:
    """Replace the block between the README's ``markers``; False if it has none."""
    if not os.path.exists(path):
        return False
    start, end = markers
    text = open(path).read()
    if start not in text or end not in text:
        return False
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    atomic_write_text(path, f"{head}{start}\n{table}\n{end}{tail}")
    return True
