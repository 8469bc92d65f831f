"""The package's module graph has no cycle, counting imports inside functions too."""
import ast
import pathlib

import fosc_jax

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


def test_the_core_never_imports_training_or_evaluation():
    graph = _graph()

    def reach(n, seen=None):
        seen = set() if seen is None else seen
        for m in graph[n]:
            if m not in seen:
                seen.add(m)
                reach(m, seen)
        return seen

    for core in ("fosc_jax.criterion", "fosc_jax.losses", "fosc_jax.attacks",
                 "fosc_jax.defenses", "fosc_jax.checkpointing"):
        bad = {m for m in reach(core) if m.startswith(("fosc_jax.training",
                                                          "fosc_jax.evaluation"))}
        assert not bad, f"{core} reaches {sorted(bad)}"
