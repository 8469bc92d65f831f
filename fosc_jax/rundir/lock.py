"""One training per workdir: an exclusive ``fcntl.flock`` on WORKDIR/.lock.

The kernel drops a flock when its holder exits, however it exits (kill -9 included), so a
lock is never left stale; the file itself stays and only records who held it last (pid, host,
start time), which is what the refusal message names.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from typing import Optional

from fosc_jax.rundir import integrity
from fosc_jax.errors import WorkdirLockedError

LOCK_FILE = ".lock"


class WorkdirLock:
    """Hold the lock of ``workdir`` until :meth:`release` (or process exit).

    Raises :class:`~fosc_jax.errors.WorkdirLockedError` naming the holder when another live
    process holds it.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        os.makedirs(workdir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, integrity.file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read(fd))
            os.close(fd)
            raise WorkdirLockedError(
                f"{workdir} is in use by another training ({holder}); wait for it to finish or "
                "stop it, or use another --workdir.") from None
        self._fd: Optional[int] = fd
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WorkdirLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _read(fd: int) -> dict:
    try:
        value = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(info: dict) -> str:
    if not info:
        return "holder unknown"
    return (f"pid {info.get('pid', '?')} on host {info.get('host', '?')}, started "
            f"{info.get('started', '?')}")
