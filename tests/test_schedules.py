"""Schedules and defense settings against hand-computed values."""
import numpy as np
import pytest

from fosc_jax import defenses, schedules
from fosc_jax.config import base_config, cifar_config


def test_fosc_threshold_is_linear_then_zero():
    # c_max 0.5, T' 40: 0.5 - t / 80.
    assert schedules.fosc_threshold(0, 0.5, 40) == 0.5
    assert schedules.fosc_threshold(10, 0.5, 40) == pytest.approx(0.375)
    assert schedules.fosc_threshold(39, 0.5, 40) == pytest.approx(0.0125)
    assert schedules.fosc_threshold(40, 0.5, 40) == 0.0
    assert schedules.fosc_threshold(49, 0.5, 40) == 0.0


def test_curriculum_fixed_levels_rise_every_T_over_Kmax_plus_one_epochs():
    # T = 110, K_max = 10: one level per 10 epochs.
    levels = [schedules.curriculum_level_fixed(e, 110, 10) for e in range(110)]
    assert levels[:10] == [0] * 10 and levels[10] == 1 and levels[-1] == 10
    assert all(b - a in (0, 1) for a, b in zip(levels, levels[1:]))
    assert schedules.curriculum_level_plateau(3, 9, 10, 10) == 3
    assert schedules.curriculum_level_plateau(3, 10, 10, 10) == 4
    assert schedules.curriculum_level_plateau(10, 50, 10, 10) == 10


def test_learning_rate_drops_at_configured_epochs():
    sched = schedules.learning_rate(0.01, (20, 40), 0.1, steps_per_epoch=5)
    assert float(sched(0)) == pytest.approx(0.01)
    assert float(sched(99)) == pytest.approx(0.01)
    assert float(sched(100)) == pytest.approx(0.001)
    assert float(sched(200)) == pytest.approx(0.0001)
    assert schedules.lr_at_epoch(0.01, (20, 40), 0.1, 45) == pytest.approx(1e-4)


def test_curriculum_budget_splits_batch_into_equal_parts():
    np.testing.assert_array_equal(defenses.curriculum_budget(8, 3), [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(defenses.curriculum_budget(6, 0), [0] * 6)


@pytest.mark.parametrize("name, epoch, expect", [
    ("unsecured", 0, dict(max_steps=0)),
    ("standard", 3, dict(max_steps=10, threshold=-np.inf, budget=10, step=0.075, rs=True)),
    ("dynamic", 10, dict(max_steps=10, threshold=0.375, budget=10, step=0.075, rs=True)),
    ("fgsm_pgd", 19, dict(max_steps=1, threshold=-np.inf, budget=1, step=0.3, rs=False)),
    ("fgsm_pgd", 20, dict(max_steps=10, threshold=-np.inf, budget=10, step=0.075, rs=True)),
])
def test_defense_settings_per_epoch(name, epoch, expect):
    c = base_config()
    c.defense.name = name
    s = defenses.settings_for_epoch(c, epoch, batch=4)
    assert s.max_steps == expect["max_steps"]
    if s.max_steps:
        assert float(s.threshold) == pytest.approx(expect["threshold"])
        np.testing.assert_array_equal(s.budget, [expect["budget"]] * 4)
        np.testing.assert_allclose(s.step_size, expect["step"], rtol=1e-6)
        assert s.random_start == expect["rs"]


def test_curriculum_settings_use_two_eps_over_k_and_k_steps_at_most():
    c = cifar_config("curriculum")
    c.num_epochs = 11  # K_max 10: level = epoch
    s3 = defenses.settings_for_epoch(c, 3, batch=8)
    np.testing.assert_array_equal(s3.budget, [0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_allclose(s3.step_size, 2 * (8 / 255) / 3, rtol=1e-6)
    s7 = defenses.settings_for_epoch(c, 7, batch=8)
    # A level runs (and costs) k steps at most; level 0 is clean training.
    assert (s3.max_steps, s7.max_steps) == (3, 7)
    assert defenses.settings_for_epoch(c, 0, batch=8).max_steps == 0
    d = defenses.get_defense(c)
    assert d.describe(7, d.init_state()) == {"c_t": None, "curriculum_k": 7}
