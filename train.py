"""Train a defense: ``python train.py --config configs/cifar_dynamic.py --workdir runs/x``.

Any config field can be overridden, e.g. ``--config.attack.eps=0.1``. ``--epochs N`` runs N
epochs with the config's schedule (lr drops, T', FGSM epochs, curriculum) scaled to N.
Rerunning the same command resumes from the latest checkpoint in the workdir; a workdir
with a run's history but no usable checkpoint is refused, and ``--restart`` starts afresh
after moving the old run aside (to ``<workdir>.replaced-<time>``, nothing is deleted).
"""
import os
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

import jax

from fosc_jax import cpu_malloc, parallel
from fosc_jax.cli_help import listing
from fosc_jax.config import validate_config
from fosc_jax.errors import EXIT_USER_ERROR, ConfigError, cli_guard, one_line
from fosc_jax.rundir import read_metrics
from fosc_jax.shorten import describe, scale_schedule
from fosc_jax.training import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default: runs/<config.name>).")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Run this many epochs with the config's "
                               "epoch-based schedule scaled to them (a shortened run).")
_RESTART = flags.DEFINE_bool("restart", False, "Start afresh in a workdir that holds a run: "
                             "move that run aside to <workdir>.replaced-<time> first.")


def _parse_flags(argv):
    """absl's parser, with bad flags and unknown config fields reported as one line."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as err:
        message = str(err)
    except (AttributeError, KeyError) as err:  # ml_collections: --config.<no such field>
        inner = err.args[0] if err.args and isinstance(err.args[0], KeyError) else err
        name, _, hint = str(inner.args[0] if inner.args else inner).partition("\n")
        name = name.strip("'\"")
        given = [a for a in argv[1:] if a.startswith("--config.") and name in a]
        message = (f"{given[0] if given else '--config.' + name}: the config has no field "
                   f"{name!r}; accepted fields are those of fosc_jax/config.py base_config()"
                   + (f" ({hint.strip()})" if hint.strip() else ""))
    print(one_line(message), file=sys.stderr, flush=True)
    raise SystemExit(EXIT_USER_ERROR)


def _config():
    """The --config file's ConfigDict; a file that cannot be loaded is a one-line error."""
    try:
        config = _CONFIG.value
        config.name  # noqa: B018 - config_flags defers a load error to the first field read
        return config
    except OSError as err:
        reason = [ln.strip() for ln in str(err).splitlines() if ln.strip()][-1]
        raise ConfigError(f"--config {flags.FLAGS['config'].config_filename}: the config file "
                          f"cannot be loaded ({reason}); pass a file such as "
                          "configs/quickstart.py") from None


@cli_guard
def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    config = _config()
    if _EPOCHS.value is not None:
        config = scale_schedule(config, _EPOCHS.value)
    workdir = _WORKDIR.value or os.path.join("runs", config.name)
    absl_logging.set_verbosity(absl_logging.WARNING)  # keep Orbax/JAX info lines out of the log
    validate_config(config)  # a bad value gets its error line before anything else
    if _EPOCHS.value is not None:
        print(f"fosc_jax: schedule scaled to {describe(config)}", flush=True)
    print(f"fosc_jax: training {config.name} ({config.defense.name}, {config.model.name}, "
          f"{config.data.name}) in {workdir}", flush=True)
    parallel.maybe_initialize_distributed()  # before anything asks JAX for its backend
    cpu_malloc.keep_freed_memory_on_cpu(jax.default_backend())  # this process only
    train_and_evaluate(config, workdir, restart=_RESTART.value)
    rows = read_metrics(workdir) if parallel.is_primary() else []
    if rows and rows[-1]["epoch"] >= config.num_epochs:
        print(f"fosc_jax: done, results in {workdir}; next: python evaluate.py --workdir "
              f"{workdir}", flush=True)


if __name__ == "__main__":
    __doc__ += "\n" + listing() + "\n"  # absl prints the module docstring for --help
    flags.mark_flags_as_required(["config"])
    app.run(main, flags_parser=_parse_flags)
