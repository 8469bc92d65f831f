"""The allocator setting that keeps XLA:CPU's temporary buffers mapped between calls, checked
by what glibc itself reports: with it, a 64 MiB block comes from the heap, not from mmap."""
import ctypes

import pytest

from fosc_jax import cpu_malloc

libc = cpu_malloc._glibc()
pytestmark = pytest.mark.skipif(libc is None, reason="needs glibc (Linux)")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mmapped_bytes_of_a_64mib_block() -> int:
    libc.mallinfo2.restype = _MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(64 << 20)
    assert block
    try:
        return libc.mallinfo2().hblkhd - before
    finally:
        libc.free(block)


def test_keep_serves_large_blocks_from_the_heap_and_default_restores_mmap():
    try:
        assert cpu_malloc.configure(keep=False)
        assert _mmapped_bytes_of_a_64mib_block() >= 64 << 20
        assert cpu_malloc.configure(keep=True)
        assert _mmapped_bytes_of_a_64mib_block() == 0
    finally:
        cpu_malloc.configure(keep=False)  # glibc's defaults: what a library user has


def test_only_the_cpu_backend_and_no_opt_out(monkeypatch):
    assert not cpu_malloc.keep_freed_memory_on_cpu("gpu")
    monkeypatch.setenv(cpu_malloc.OPT_OUT_ENV, "0")
    assert not cpu_malloc.keep_freed_memory_on_cpu("cpu")
    monkeypatch.delenv(cpu_malloc.OPT_OUT_ENV)
    try:
        assert cpu_malloc.keep_freed_memory_on_cpu("cpu")
    finally:
        cpu_malloc.configure(keep=False)


def test_building_a_trainer_or_a_suite_leaves_the_allocator_alone():
    """Only the CLIs change the process's allocator: a notebook building a Trainer or an
    evaluation Suite still gets glibc's mmap for a large block."""
    import jax
    import numpy as np

    import tiny_config
    from fosc_jax.classifier import Classifier
    from fosc_jax.evaluation.suite import Suite
    from fosc_jax.training import Trainer

    cpu_malloc.configure(keep=False)
    trainer = Trainer(tiny_config.get_config("dynamic"), (28, 28, 1), 10)
    variables = trainer.model.init(jax.random.key(0), np.zeros((1, 28, 28, 1)), train=False)
    Suite(Classifier(trainer.model, variables), np.zeros((4, 28, 28, 1), np.uint8),
          np.zeros(4, np.int64), batch_size=4, progress=False)
    assert _mmapped_bytes_of_a_64mib_block() >= 64 << 20
