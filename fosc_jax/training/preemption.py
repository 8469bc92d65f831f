"""Preemption: SIGTERM or Ctrl-C asks the training loop to checkpoint and return."""
from __future__ import annotations

import signal
import threading


class PreemptionFlag:
    """Set by SIGTERM (what schedulers and preemptible TPU/GPU VMs send before killing a job)
    or SIGINT (Ctrl-C); a second SIGINT interrupts at once (KeyboardInterrupt).

    The training loop checks it at every logging chunk, saves a checkpoint of the exact
    mid-epoch state and returns; rerunning the command resumes bitwise-identically.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, install: bool = True):
        self.requested = False
        self._previous: dict = {}
        if install and threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):  # noqa: ARG002
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        print(f"received {signal.Signals(signum).name}: checkpointing at the next chunk "
              "boundary, then exiting", flush=True)

    def __call__(self, step: int) -> bool:  # noqa: ARG002
        return self.requested

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}
