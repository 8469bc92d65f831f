"""The README's library example really runs and does what its comments say."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_readme_library_example_runs(capsys):
    text = open(os.path.join(ROOT, "README.md")).read()
    section = text.split("## Library use", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    res = namespace["res"]
    assert res.num_steps.shape == (8,) and res.fosc.shape == (8,)
    assert 1 <= int(res.num_steps.min()) and int(res.num_steps.max()) <= 10
    assert "[" in capsys.readouterr().out


def _documented_commands():
    """(file, command) for every line of a bash block and every inline `python ...` span."""
    for name in ("README.md", os.path.join("docs", "usage.md")):
        text = open(os.path.join(ROOT, name)).read()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S):
            for line in block.replace("\\\n", " ").splitlines():
                yield name, line.split("#", 1)[0]
        for span in re.findall(r"`(python [^`]+)`", text):
            yield name, " ".join(span.split())


def test_documented_commands_run_real_modules_and_write_only_under_runs():
    """A newcomer copying a command neither hits a renamed module nor overwrites committed
    files: every --out, and every --workdir of train.py/evaluate.py, is under runs/."""
    import importlib.util

    commands = list(_documented_commands())
    assert any("fosc_jax.reporting" in c for _, c in commands)
    for name, command in commands:
        for module in re.findall(r"python -m ([\w.]+)", command):
            assert importlib.util.find_spec(module) is not None, (name, command)
        targets = re.findall(r"--out[ =](\S+)", command)
        if re.search(r"\b(train|evaluate)\.py\b", command):
            for group in re.findall(r"--workdir((?: +[^-\s&][^\s&]*)+)", command):
                targets += group.split()
        for target in targets:
            assert target.strip("'\"").startswith("runs/"), (name, command)
