"""The notebooks run end to end: quickstart.ipynb (a shortened quickstart) and
cifar_dynamic.ipynb (shortened, on a random CIFAR-shaped stand-in for tfds' CIFAR-10), and
their install cell neither trusts a folder named fosc_jax nor replaces the runtime's jax.

The kernel is started from a kernelspec written into tmp_path by ipykernel for *this*
interpreter (argv[0] = sys.executable), so the notebook runs in the test's environment
whatever kernels the user has installed; nothing is installed into ~/.local/share/jupyter.
"""
import importlib.metadata
import json
import os
import subprocess
import sys
import sysconfig

import numpy as np

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from ipykernel.kernelspec import write_kernel_spec  # noqa: E402
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "notebooks", "quickstart.ipynb")
CIFAR_NOTEBOOK = os.path.join(ROOT, "notebooks", "cifar_dynamic.ipynb")

OVERRIDES = {"data.train_limit": 128, "batch_size": 32, "eval.num_examples": 32,
             "eval.batch_size": 32, "quiet": True}


def _kernel_manager(tmp_path) -> KernelManager:
    kernels = tmp_path / "kernels"
    write_kernel_spec(path=str(kernels / "python3"))
    km = KernelManager(kernel_name="python3",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)]))
    argv0 = km.kernel_spec.argv[0]
    assert os.path.realpath(argv0) == os.path.realpath(sys.executable), argv0
    return km


@pytest.mark.parametrize("path", [NOTEBOOK, CIFAR_NOTEBOOK], ids=os.path.basename)
def test_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
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
               PYTHONPATH=ROOT,  # this checkout's code, whichever copy is installed
               FOSC_JAX_NOTEBOOK_OVERRIDES=json.dumps(OVERRIDES), FOSC_JAX_NOTEBOOK_EPOCHS="1",
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
    assert "FOSC PGD-20" in text and "overrides:" in text and "T' 1" in text
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if "image/png" in o.get("data", {})]
    assert images, "no figure displayed"


def _execute(path, tmp_path, env_extra):
    env = dict(os.environ)
    env.update(XLA_FLAGS="", JAX_PLATFORMS=env.get("JAX_PLATFORMS", "cpu"), MPLBACKEND="Agg",
               PYTHONPATH=ROOT, **env_extra)
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, km=_kernel_manager(tmp_path), kernel_name="python3", timeout=600,
        resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}})
    client.execute(env=env)
    return nb


@pytest.mark.slow
def test_cifar_notebook_runs_on_a_stand_in(tmp_path):
    """CI has no CIFAR-10: 64 random 32x32x3 images stand in (their numbers mean nothing)."""
    rng = np.random.default_rng(0)
    stand_in = tmp_path / "cifar_stand_in.npz"
    np.savez(stand_in, x_train=rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(64) % 10, x_test=rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(16) % 10)
    overrides = {"data.source": f"files:{stand_in}", "batch_size": 32, "eval.num_examples": 16,
                 "attack.num_steps": 2, "quiet": True, "fosc_sample_size": 64}
    workdir = tmp_path / "run"
    nb = _execute(CIFAR_NOTEBOOK, tmp_path, dict(
        FOSC_JAX_NOTEBOOK_OVERRIDES=json.dumps(overrides), FOSC_JAX_NOTEBOOK_EPOCHS="1",
        FOSC_JAX_NOTEBOOK_WORKDIR=str(workdir), FOSC_JAX_NOTEBOOK_EVAL_EXAMPLES="16",
        FOSC_JAX_NOTEBOOK_ATTACKS="pgd10"))
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream")
    assert "schedule scaled to 1 epochs" in text and "cifar_cnn" in text
    with open(workdir / "config.json") as f:
        config = json.load(f)
    assert (config["model"]["name"], config["defense"]["name"], config["data"]["name"]) == (
        "cifar_cnn", "dynamic", "cifar10")
    assert (workdir / "eval" / "results.md").is_file()
    assert (workdir / "report" / "fosc_density.png").is_file()


def test_install_cell_ignores_a_fosc_jax_folder_and_keeps_jax(tmp_path):
    """The install cell in a fresh runtime where fosc_jax is not installed and an old clone
    sits in ./fosc_jax: it must pip-install the checkout, pinning the runtime's jax."""
    nb = nbformat.read(NOTEBOOK, as_version=4)
    cell = next(c.source for c in nb.cells if c.cell_type == "code" and "REPO_URL" in c.source)
    (tmp_path / "fosc_jax" / "configs").mkdir(parents=True)  # the namespace-package trap
    (tmp_path / "fosc_jax_repo").symlink_to(ROOT)  # the clone the cell would have made
    purelib = sysconfig.get_paths()["purelib"]
    program = "\n".join([
        "import subprocess, sys",
        f"sys.path.append({purelib!r})  # site-packages without its .pth files: no fosc_jax",
        "calls = []",
        "def fake_run(cmd, check=False):",
        "    calls.append(cmd)",
        "    if '-c' in cmd: calls.append(open(cmd[cmd.index('-c') + 1]).read())",
        "subprocess.run = fake_run",
        cell,
        "import json; print('RESULT', json.dumps([fosc_jax.__file__, calls]))",
    ])
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([sys.executable, "-S", "-c", program], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    file, calls = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert os.path.realpath(file) == os.path.join(os.path.realpath(ROOT), "fosc_jax", "__init__.py")
    pip, pins = calls
    assert pip[1:6] == ["-m", "pip", "install", "-q", "-e"]
    assert os.path.realpath(pip[6]) == os.path.realpath(ROOT)
    assert pins.split() == [f"jax=={importlib.metadata.version('jax')}",
                            f"jaxlib=={importlib.metadata.version('jaxlib')}"]


@pytest.mark.parametrize("path,name", [(NOTEBOOK, "quickstart_notebook"),
                                       (CIFAR_NOTEBOOK, "cifar_dynamic_notebook")],
                         ids=["quickstart", "cifar"])
def test_default_workdirs_are_under_runs_and_differ_when_shortened(path, name, monkeypatch):
    """A shortened run, then the full one, with the default folders: no config mismatch, as
    they never share a folder; both are in the repository's runs/ (tensorboard --logdir runs/)."""
    import ast
    import hashlib
    from pathlib import Path

    nb = nbformat.read(path, as_version=4)
    cell = next(c.source for c in nb.cells
                if c.cell_type == "code" and "def default_workdir" in c.source)
    defs = [n for n in ast.parse(cell).body if isinstance(n, ast.FunctionDef)
            and n.name in ("notebook_overrides", "default_workdir")]
    namespace = {"os": os, "json": json, "hashlib": hashlib, "REPO_DIR": Path(ROOT)}
    exec(compile(ast.Module(body=defs, type_ignores=[]), path, "exec"), namespace)
    default_workdir = namespace["default_workdir"]
    notebook_overrides = namespace["notebook_overrides"]
    monkeypatch.delenv("FOSC_JAX_NOTEBOOK_OVERRIDES", raising=False)
    full = default_workdir(name, 4, 4, notebook_overrides())
    monkeypatch.setenv("FOSC_JAX_NOTEBOOK_OVERRIDES", json.dumps(OVERRIDES))
    short = default_workdir(name, 1, 4, notebook_overrides())
    only_overrides = default_workdir(name, 4, 4, notebook_overrides())
    assert full == os.path.join(ROOT, "runs", name)
    assert len({full, short, only_overrides}) == 3
    assert all(os.path.dirname(p) == os.path.join(ROOT, "runs") for p in (short, only_overrides))
    assert os.path.basename(short).startswith(f"{name}_1ep_")
