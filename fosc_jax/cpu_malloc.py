"""Keep freed memory in the process on XLA:CPU, so compiled programs stop page-faulting.

Every call of a compiled XLA:CPU program allocates its temporary buffers and frees them at the
end. glibc serves large blocks with fresh ``mmap`` regions and hands them back on free, so
every call pays page faults (and the kernel's zeroing) for all of its temporary memory again:
about 2 million faults in 40 s of mnist_cnn training steps on this project's CPU. Serving every
block from the heap and never trimming it makes the memory stay mapped between calls. It pays
most where a step is several short programs (the host-checked early exit of Dynamic AT:
BENCHMARKS.md); resident memory stays at its peak instead of shrinking.

A process opts in (the CLIs do; a notebook may call :func:`keep_freed_memory_on_cpu`).
Only glibc (Linux) has these knobs; elsewhere :func:`configure` does nothing and says so.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
from typing import Optional

# mallopt parameters (malloc.h) and glibc's defaults.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM, _DEFAULT_MMAP_MAX = 128 * 1024, 65536
_KEEP_TRIM = 2 ** 31 - 1          # the largest value mallopt takes: never trim the heap
OPT_OUT_ENV = "FOSC_JAX_KEEP_FREED_MEMORY"   # set to 0 to leave the allocator alone


@functools.lru_cache(maxsize=None)
def _glibc() -> Optional[ctypes.CDLL]:
    """The C library, if it is glibc; looked up once (find_library runs ``ldconfig -p``)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # only glibc has it (musl, macOS do not)
    except (OSError, AttributeError):
        return None
    return libc


def configure(keep: bool = True) -> bool:
    """``keep=True``: serve every allocation from the heap and never give it back (no mmap
    per large block); ``False``: glibc's defaults again. Returns whether it took effect."""
    libc = _glibc()
    if libc is None:
        return False
    trim, mmap_max = (_KEEP_TRIM, 0) if keep else (_DEFAULT_TRIM, _DEFAULT_MMAP_MAX)
    return bool(libc.mallopt(_M_MMAP_MAX, mmap_max)) & bool(libc.mallopt(_M_TRIM_THRESHOLD, trim))


def keep_freed_memory_on_cpu(backend: str) -> bool:
    """What the train.py and evaluate.py CLIs call as they start (it changes the allocator
    of the whole process, so no library constructor does): :func:`configure` on the CPU
    backend, unless ``FOSC_JAX_KEEP_FREED_MEMORY=0``. Returns whether it took effect."""
    if backend != "cpu" or os.environ.get(OPT_OUT_ENV, "1") == "0":
        return False
    return configure(True)
