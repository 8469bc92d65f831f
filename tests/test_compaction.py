"""The batch-compaction helpers and the loop state's row moves, against hand-worked cases."""
import jax.numpy as jnp
import numpy as np

from fosc_jax.attacks import LoopState
from fosc_jax.training import compaction


def test_ladder_halves_down_to_the_minimum_and_the_device_multiple():
    assert compaction.ladder(128, 16) == (128, 64, 32, 16)
    assert compaction.ladder(128, 16, multiple=32) == (128, 64, 32)
    assert compaction.ladder(96, 10) == (96, 48, 24, 12)
    assert compaction.ladder(24, 16) == (24,)          # 12 is below the minimum
    assert compaction.ladder(7, 1) == (7,)             # odd: no whole half
    assert compaction.fit(33, (128, 64, 32, 16)) == 64
    assert compaction.fit(32, (128, 64, 32, 16)) == 32
    assert compaction.fit(0, (128, 64, 32, 16)) == 16


def test_active_rows_come_first_in_order_then_padding_and_writing_back_restores_the_rest():
    active = jnp.array([False, True, False, False, True, True, False, False])
    idx = compaction.active_first(active, 4)
    np.testing.assert_array_equal(idx, [1, 4, 5, 0])
    b, t = 8, 3
    full = LoopState(x=jnp.arange(b * 2.0).reshape(b, 2), g=jnp.zeros((b, 2)),
                     c=jnp.arange(b * 1.0), loss=jnp.zeros(b), steps=jnp.arange(b),
                     active=active, k=jnp.int32(1), fosc_trace=jnp.zeros((t, b)),
                     loss_trace=jnp.zeros((t, b)))
    part = full.take(idx)
    np.testing.assert_array_equal(part.c, [1.0, 4.0, 5.0, 0.0])
    np.testing.assert_array_equal(part.x, [[2, 3], [8, 9], [10, 11], [0, 1]])
    np.testing.assert_array_equal(part.steps, [1, 4, 5, 0])
    np.testing.assert_array_equal(part.active, [True, True, True, False])
    assert part.fosc_trace.shape == part.loss_trace.shape == (t, 4) and int(part.k) == 1
    part = part.replace(c=part.c + 100.0, k=jnp.int32(5), fosc_trace=part.fosc_trace.at[2].set(7.0))
    back = full.put(idx, part)
    np.testing.assert_array_equal(back.c, [100, 101, 2, 3, 104, 105, 6, 7])
    np.testing.assert_array_equal(back.x, full.x)
    np.testing.assert_array_equal(back.fosc_trace[2], [7, 7, 0, 0, 7, 7, 0, 0])
    assert int(back.k) == 5
