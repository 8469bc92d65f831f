"""Reports from saved runs: the paper's figures (:mod:`.figures` draws, :mod:`.report`
gathers the data and writes DIR/index.md); ``python -m fosc_jax.reporting`` is the CLI.
Tables of evaluation results are :mod:`fosc_jax.evaluation.tables`; the reproduction's
report is :mod:`fosc_jax.reproduce.report`."""
from fosc_jax.reporting.report import make_report

__all__ = ["make_report"]
