"""A run directory: everything training writes into WORKDIR and everything read back from it.

- :mod:`.config_file`: config.json and data_sizes.json, and the checks a resume must pass;
- :mod:`.metrics`: metrics.jsonl rows and fosc/epoch_XXXX.npz samples (epochs 1-based);
- :mod:`.checkpoints`: Orbax checkpoints of the training state, verified on restore;
- :mod:`.export`: the trained model, read back (``load_classifier``) or exported;
- :mod:`.lock`: one training per workdir; :mod:`.tensorboard`: event files;
- :mod:`.integrity`: checksums and atomic writes the others use.

The names below are the ones readers of a run need.
"""
from fosc_jax.rundir.config_file import CONFIG_FILE, load_config
from fosc_jax.rundir.export import (EXPORT_FILE, export_classifier, export_complete,
                                    load_classifier)
from fosc_jax.rundir.metrics import METRICS_FILE, fosc_epochs, load_fosc_sample, read_metrics

__all__ = ["CONFIG_FILE", "EXPORT_FILE", "METRICS_FILE", "load_config", "load_classifier",
           "export_classifier", "export_complete", "read_metrics", "fosc_epochs", "load_fosc_sample"]
