"""The package's module graph has no cycle, counting imports inside functions too."""
import ast
import pathlib
import sys

import fosc_jax
import pytest

PACKAGE = pathlib.Path(fosc_jax.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: pathlib.Path, name: str, modules: dict) -> set:
    """Modules of the package that ``name`` imports anywhere in its source. ``from pkg
    import sub`` counts as importing pkg.sub; a parent package imported only on the way to
    a submodule is not an edge (Python runs it first, whoever imports)."""
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_pkg else name.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in modules and t != name}
    return out


def _graph() -> dict:
    modules = _modules()
    graph = {name: _imports(path, name, modules) for name, path in modules.items()}
    # A package's __init__ importing its own submodules is how packages work, not a cycle.
    return {n: {t for t in ts if not t.startswith(n + ".")} for n, ts in graph.items()}


def _find_cycle(graph: dict):
    state, stack = {}, []

    def visit(n):
        state[n] = "open"
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == "open":
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        state[n] = "done"
        stack.pop()
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_module_graph_is_acyclic():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _find_cycle(graph) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": set()}) is None


# The layers, lowest first: a module may import its own layer and those below it, never
# one above. Keys are the top-level modules and packages of fosc_jax.
LAYERS = (
    ("foundation", {"errors", "_checks", "parallel", "cpu_malloc"}),
    ("maths", {"criterion", "losses", "attacks", "schedules"}),
    ("models, data and defenses", {"classifier", "models", "data", "defenses"}),
    ("config", {"config", "shorten"}),
    ("run directory", {"rundir"}),
    ("evaluation", {"evaluation", "autoattack", "cli_help"}),
    ("training", {"training"}),
    ("reporting", {"reporting"}),
    ("reproduction", {"reproduce"}),
)


def _unit(module: str) -> str:
    """The top-level module or package of fosc_jax that ``module`` belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _layer_of() -> dict:
    return {unit: i for i, (_, units) in enumerate(LAYERS) for unit in units}


def test_every_module_belongs_to_a_layer():
    layer = _layer_of()
    missing = sorted({_unit(m) for m in _modules()} - set(layer) - {""})
    assert not missing, f"modules or packages in no layer of LAYERS: {missing}"


def test_no_module_imports_a_layer_above_its_own():
    layer = _layer_of()
    names = [name for name, _ in LAYERS]
    bad = [f"{a} ({names[layer[_unit(a)]]}) imports {b} ({names[layer[_unit(b)]]})"
           for a, targets in sorted(_graph().items()) if _unit(a)
           for b in sorted(targets) if layer[_unit(b)] > layer[_unit(a)]]
    assert not bad, "\n".join(bad)


def test_the_layer_check_finds_an_upward_import(monkeypatch):
    graph = {"fosc_jax.attacks": {"fosc_jax.training.loop"}, "fosc_jax.training.loop": set()}
    monkeypatch.setattr(sys.modules[__name__], "_graph", lambda: graph)
    with pytest.raises(AssertionError, match=r"fosc_jax.attacks \(maths\) imports "
                                             r"fosc_jax.training.loop \(training\)"):
        test_no_module_imports_a_layer_above_its_own()
