"""One process of the two-process CI test (tests/test_reliability.py::test_two_processes...).

Launched as ``python tests/multihost_worker.py WORKDIR`` with FOSC_JAX_COORDINATOR,
FOSC_JAX_NUM_PROCESSES and FOSC_JAX_PROCESS_ID set (the launch README.md documents) and one
CPU device per process. Trains the tiny config (4 steps per epoch) for one epoch: process 1
alone asks to stop after step 2 (as a SIGTERM to one process would), both checkpoint there and
return; a second call resumes from that checkpoint and finishes the epoch; then evaluate.py's
main runs FGSM on the result.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

from fosc_jax import parallel  # noqa: E402
from fosc_jax.training import train_and_evaluate  # noqa: E402

import tiny_config  # noqa: E402


def get_config():
    """The tiny config with the least to compile: a 2-step attack, no per-epoch test eval."""
    c = tiny_config.get_config("dynamic", epochs=1)
    c.attack.num_steps = 2
    c.eval.num_examples = 0
    return c


def main(workdir: str) -> None:
    parallel.maybe_initialize_distributed()
    import jax
    assert jax.process_count() == 2 and len(jax.devices()) == 2, jax.devices()
    config = get_config()
    stopped = train_and_evaluate(config, workdir,
                                 should_stop=lambda step: jax.process_index() == 1 and step >= 2)
    assert stopped == {}, stopped  # stopped mid-epoch on both processes
    row = train_and_evaluate(config, workdir)  # resumes at step 2
    assert row["resumed_mid_epoch"] is True, row
    import evaluate
    evaluate.main(["--workdir", workdir, "--attacks", "fgsm", "--num-examples", "16",
                   "--batch-size", "8", "--no-honesty", "--quiet"])
    print(f"process {jax.process_index()} done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
