"""notebooks/quickstart.ipynb runs end to end (a shortened run of the quickstart config).

The kernel is started from a kernelspec written into tmp_path by ipykernel for *this*
interpreter (argv[0] = sys.executable), so the notebook runs in the test's environment
whatever kernels the user has installed; nothing is installed into ~/.local/share/jupyter.
"""
import json
import os
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from ipykernel.kernelspec import write_kernel_spec  # noqa: E402
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "quickstart.ipynb")

OVERRIDES = {"num_epochs": 1, "defense.t_prime": 1, "data.train_limit": 128,
             "batch_size": 32, "eval.num_examples": 32, "eval.batch_size": 32, "quiet": True}


def _kernel_manager(tmp_path) -> KernelManager:
    kernels = tmp_path / "kernels"
    write_kernel_spec(path=str(kernels / "python3"))
    km = KernelManager(kernel_name="python3",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    argv0 = km.kernel_spec.argv[0]
    assert os.path.realpath(argv0) == os.path.realpath(sys.executable), argv0
    return km


def test_notebook_is_clean():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for c in nb.cells:
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None, "notebook has stored outputs"


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path):
    workdir = tmp_path / "run"
    env = dict(os.environ)
    env.update(XLA_FLAGS="", JAX_PLATFORMS=env.get("JAX_PLATFORMS", "cpu"), MPLBACKEND="Agg",
               FOSC_JAX_NOTEBOOK_OVERRIDES=json.dumps(OVERRIDES),
               FOSC_JAX_NOTEBOOK_WORKDIR=str(workdir), FOSC_JAX_NOTEBOOK_EVAL_EXAMPLES="32")
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        env["JAX_COMPILATION_CACHE_DIR"] = os.environ["JAX_COMPILATION_CACHE_DIR"]

    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, km=_kernel_manager(tmp_path), kernel_name="python3", timeout=600,
        resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}})
    client.execute(env=env)  # raises CellExecutionError on the first failing cell

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors
    assert (workdir / "metrics.jsonl").is_file()
    assert (workdir / "report" / "fosc_density.png").is_file()
    assert (workdir / "eval" / "results.md").is_file()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")
    assert "FOSC PGD-20" in text and "overrides:" in text
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert images, "no figure displayed"
