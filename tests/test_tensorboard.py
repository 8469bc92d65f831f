"""TensorBoard events written without TensorFlow, read back by TensorBoard's own reader."""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest

from fosc_jax import parallel
from fosc_jax.rundir import tensorboard
from fosc_jax.training import train_and_evaluate
from test_training import tiny_config, tiny_dataset


def test_crc32c_check_values():
    # RFC 3720 B.4 and the standard check value of CRC-32C
    assert tensorboard.crc32c(b"123456789") == 0xE3069283
    assert tensorboard.crc32c(bytes(32)) == 0x8A9136AA
    assert tensorboard.crc32c(bytes([0xFF] * 32)) == 0x62A8AB43


def _accumulator(logdir):
    ea = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    acc = ea.EventAccumulator(logdir, size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0})
    acc.Reload()
    return acc


def test_training_writes_every_metric_and_histograms(tmp_path):
    pytest.importorskip("tensorboard")
    run = str(tmp_path)
    train_and_evaluate(tiny_config("dynamic", epochs=2), run, dataset=tiny_dataset(),
                       mesh=parallel.make_mesh(1))
    assert len(glob.glob(os.path.join(run, "events.out.tfevents.*"))) == 1
    acc = _accumulator(run)
    with open(os.path.join(run, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    numeric = {k for r in rows for k, v in r.items() if k != "epoch"
               and isinstance(v, (int, float)) and not isinstance(v, bool)}
    assert numeric <= set(acc.Tags()["scalars"]) and "test_pgd10_acc" in numeric
    for key in numeric:
        got = [(e.step, e.value) for e in acc.Scalars(key)]
        want = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
        assert [s for s, _ in got] == [s for s, _ in want]
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-6)
    fosc = acc.Histograms("fosc")
    steps = acc.Histograms("attack_steps")
    assert [h.step for h in fosc] == [1, 2] and [h.step for h in steps] == [1, 2]
    # 64 training examples per epoch, every one counted; attack steps lie in 1..3
    assert all(h.histogram_value.num == 64 for h in fosc + steps)
    assert all(sum(h.histogram_value.bucket) == 64 for h in steps)
    assert all(1 <= h.histogram_value.min <= h.histogram_value.max <= 3 for h in steps)
    assert all(h.histogram_value.min >= -1e-5 for h in fosc)


def test_writer_histogram_matches_numpy(tmp_path):
    values = np.random.default_rng(0).normal(size=1000)
    writer = tensorboard.EventWriter(str(tmp_path))
    writer.write(3, {"x": 1.5, "skipped": None, "flag": True}, {"h": values})
    acc = _accumulator(str(tmp_path))
    assert acc.Tags()["scalars"] == ["x"] and acc.Scalars("x")[0].step == 3
    h = acc.Histograms("h")[0].histogram_value
    assert (h.min, h.max, h.num) == (values.min(), values.max(), 1000)
    assert h.sum == pytest.approx(values.sum()) and h.sum_squares == pytest.approx((values ** 2).sum())
    counts, edges = np.histogram(values, 30)
    np.testing.assert_allclose(h.bucket_limit, edges[1:])
    np.testing.assert_array_equal(h.bucket, counts)
