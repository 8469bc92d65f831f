"""AutoAttack in JAX (Croce & Hein, ICML 2020): APGD-CE, APGD-DLR, APGD-T, FAB-T, Square.

Each attack is a pure function ``attack(logits_fn, x0, y, key, *, eps, ...) ->
AutoAttackResult`` that traces under ``jax.jit`` into one program with static shapes and
early-exit ``lax.while_loop``s. The standard AutoAttack evaluation (APGD-CE, then APGD-T,
FAB-T and Square on the points still robust) runs through the evaluation suite:
``fosc_jax.autoattack.runner`` (used by ``evaluate.py --attacks autoattack``).
"""
from fosc_jax.autoattack.apgd import apgd, apgd_ce, apgd_dlr, apgd_t, checkpoint_windows
from fosc_jax.autoattack.common import AutoAttackResult
from fosc_jax.autoattack.dlr import dlr_loss, dlr_targeted_loss, margin
from fosc_jax.autoattack.fab import fab_t, project_linf
from fosc_jax.autoattack.square import square

__all__ = ["AutoAttackResult", "apgd", "apgd_ce", "apgd_dlr", "apgd_t", "checkpoint_windows",
           "dlr_loss", "dlr_targeted_loss", "margin", "fab_t", "project_linf", "square"]
