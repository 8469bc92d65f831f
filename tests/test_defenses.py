"""The defense boundary: a defense added from outside trains through the unchanged step;
checkpoints of the older state layout restore; a model loads without the training stack."""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

from fosc_jax import rundir, defenses, parallel
from fosc_jax.config import validate_config
from fosc_jax.defenses import DEFENSES, Defense
from fosc_jax.losses import cross_entropy
from fosc_jax.training import Trainer, train_and_evaluate

import tiny_config
from test_training import tiny_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class HalfClean(Defense):
    """A toy plug-in: FGSM, outer loss 0.5 CE(f(x)) + 0.5 CE(f(x_adv)), and a counter of
    finished epochs as cross-epoch state."""
    name = "half_clean"
    label = "Half clean"

    def attack_settings(self, epoch, batch, state):
        return self.pgd_settings(batch, budget=1, max_steps=1, step=self.config.attack.eps,
                                 random_start=False)

    def training_loss(self, forward, batch_stats, x, x_adv, y, result):
        clean, batch_stats = forward(x, batch_stats)
        adv, batch_stats = forward(x_adv, batch_stats)
        return 0.5 * cross_entropy(clean, y) + 0.5 * cross_entropy(adv, y), adv, batch_stats

    def init_state(self):
        return {"epochs_seen": np.int32(0)}

    def end_epoch(self, state, epoch, probe):
        return {"epochs_seen": np.int32(int(state["epochs_seen"]) + 1)}

    def describe(self, epoch, state):
        return {"c_t": None, "curriculum_k": int(state["epochs_seen"])}


def test_a_registered_defense_trains_through_the_shared_step(tmp_path, monkeypatch):
    monkeypatch.setitem(DEFENSES, HalfClean.name, HalfClean)
    c = tiny_config.get_config("half_clean", epochs=2)
    c.eval.num_examples = 0  # no per-epoch test numbers: nothing here reads them
    validate_config(c, check_data=False)  # validation asks the registry
    ds = tiny_dataset(n_train=32)  # 2 steps per epoch
    train_and_evaluate(c, str(tmp_path), dataset=ds, mesh=parallel.make_mesh(1))
    rows = rundir.read_metrics(str(tmp_path))
    assert [r["attack_steps_mean"] for r in rows] == [1.0, 1.0]
    assert [r["curriculum_k"] for r in rows] == [0, 1]  # its state crossed the epoch
    # Its state is checkpointed and its loss is what the step optimised.
    trainer = Trainer(c, (28, 28, 1), 10, steps_per_epoch=2, mesh=parallel.make_mesh(1))
    manager = rundir.checkpoints.make_manager(str(tmp_path), c)
    state, _ = rundir.checkpoints.restore_newest_good(manager, trainer.abstract_state())
    manager.close()
    assert int(state.defense_state["epochs_seen"]) == 2
    x = jnp.asarray(ds.x_train[:16], jnp.float32) / 255
    y = jnp.asarray(ds.y_train[:16])
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    train_logits = lambda z: trainer.model.apply(  # noqa: E731 - BN on the batch's statistics
        variables, z, train=True, mutable=["batch_stats"])[0]
    ce = lambda z: cross_entropy(train_logits(z), y)  # noqa: E731
    # FGSM as the config's attack sees the model (attack.bn_mode "train"), by hand.
    adv = jnp.clip(x + 0.3 * jnp.sign(jax.grad(lambda z: jnp.sum(ce(z)))(x)), 0, 1)
    expected = 0.5 * ce(x) + 0.5 * ce(adv)
    # The loop's own compiled program (one mesh device, the same split): a cache hit.
    x_all = parallel.replicate((jnp.asarray(ds.x_train), jnp.asarray(ds.y_train, jnp.int32)),
                               trainer.mesh)
    _, metrics = trainer.run_steps(state, *x_all, np.arange(16)[None],
                                   trainer.settings_for_epoch(2, {"epochs_seen": 2}))
    metrics = {"adv_loss": metrics["adv_loss"][0]}
    np.testing.assert_allclose(metrics["adv_loss"], expected, rtol=2e-4, atol=2e-5)


def test_load_classifier_needs_no_training_stack(tmp_path):
    c = tiny_config.get_config("standard")
    train_and_evaluate(c, str(tmp_path), dataset=tiny_dataset(), mesh=parallel.make_mesh(1))
    code = ("import sys; from fosc_jax import load_classifier; "
            f"clf = load_classifier({str(tmp_path)!r}); "
            "assert clf.epoch == 1, clf.epoch; "
            "bad = [m for m in ('fosc_jax.training', 'fosc_jax.training.train_state', 'optax') "
            "if m in sys.modules]; assert not bad, bad; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-2000:]


def test_settings_for_epoch_of_every_registered_defense():
    c = tiny_config.get_config("dynamic", epochs=4)
    for name, cls in DEFENSES.items():
        c.defense.name = name
        s = defenses.settings_for_epoch(c, 1, 16)
        assert s.budget.shape == (16,) and s.max_steps >= 0 and cls.label
        assert defenses.get_defense(c).describe(1, defenses.get_defense(c).init_state()).keys() \
            == {"c_t", "curriculum_k"}
