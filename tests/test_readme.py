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
