"""A wall-time budget: stop cleanly before it, as a preemption would, so short accelerator
sessions (a Colab runtime, a preemptible VM, a 15-minute slot) can carry a run forward.

:class:`StopFlag` answers the training loop's ``should_stop(step)`` poll (made at every
logging chunk): yes once SIGTERM/SIGINT arrived or the deadline is near. The loop then
checkpoints the exact mid-epoch state and returns; the stages after training check the same
flag before each unit of work (a model to evaluate), so nothing is cut half-way.
"""
from __future__ import annotations

import time
from typing import Callable, Optional

from fosc_jax.training.preemption import PreemptionFlag


class StopFlag:
    """Signals or the wall clock: ``flag(step)`` is True once either asks to stop.

    ``budget_s``: seconds from construction the process may run (None: no limit);
    ``margin_s``: seconds kept for what follows the stop (a checkpoint, packing the archive),
    so the loop stops at ``budget_s - margin_s``."""

    def __init__(self, budget_s: Optional[float] = None, margin_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, install: bool = True):
        if budget_s is not None and not budget_s > 0:
            raise ValueError(f"the time budget must be > 0 seconds, got {budget_s}.")
        if not margin_s >= 0:
            raise ValueError(f"the time margin must be >= 0 seconds, got {margin_s}.")
        self._clock = clock
        self._deadline = None if budget_s is None else clock() + budget_s - margin_s
        self._signals = PreemptionFlag(install=install)
        self.reason: Optional[str] = None

    def left(self) -> float:
        """Seconds until the stop point (inf without a budget)."""
        return float("inf") if self._deadline is None else self._deadline - self._clock()

    def __call__(self, step: int = 0) -> bool:  # noqa: ARG002
        if self.reason is None:
            if self._signals.requested:
                self.reason = "a signal"
            elif self.left() <= 0:
                self.reason = "the time budget"
        return self.reason is not None

    def restore(self) -> None:
        self._signals.restore()
