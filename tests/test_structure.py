"""The package's shape: no import cycles, one-way layers, files and functions of a readable size.

Every module of ``desra_fast`` is parsed (not imported: a module that cannot import here, e.g.
without CUDA, is still checked), and every ``import`` statement in it counts, including the
ones inside functions: a lazy import hides a cycle from the interpreter, not from the reader.

Layers, lowest first (a module may import its own layer and the ones below):
detection core (the top-level modules) <- models <- runtime <- jobs <- pipeline / train / report
<- cli. ``desra_fast.kernels`` (the ``kernels/`` folder) and the compiled ``desra_fast._C`` are
below everything, and never import ``desra_fast`` back.
"""
import ast
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "desra_fast"
KERNELS = ROOT / "kernels"

#: Layer of each sub-package (top-level modules not listed are the detection core, layer 0).
LAYERS = {"models": 1, "runtime": 2, "export": 2, "jobs": 3, "pipeline": 4, "train": 4, "report": 4,
          "cli": 5, "__main__": 5}
LAYER_NAMES = {0: "detection core", 1: "models", 2: "runtime", 3: "jobs", 4: "pipeline/train/report", 5: "cli"}
#: Outside the layering: below every layer, may import nothing of desra_fast.
LEAVES = ("desra_fast.kernels", "desra_fast._C")

MAX_FILE_LINES = 550
MAX_FUNCTION_LINES = 120


def package_modules(pkg: Path = PKG, name: str = "desra_fast"):
    """{dotted module name: path} of every Python file of the package."""
    mods = {}
    for dirpath, dirs, files in os.walk(pkg):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
        for f in files:
            if f.endswith(".py"):
                rel = Path(dirpath, f).relative_to(pkg).with_suffix("")
                parts = [name, *rel.parts]
                if parts[-1] == "__init__":
                    parts.pop()
                mods[".".join(parts)] = Path(dirpath, f)
    return mods


def imported_modules(module: str, path: Path, known):
    """[(imported desra_fast module, line)] of one file: ``from X import name`` counts as
    ``X.name`` when that is a module, else as ``X``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    is_pkg = path.name == "__init__.py"
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "desra_fast"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                if not is_pkg:
                    base = base[:-1]
                base = base[:len(base) - node.level + 1]
                if not base:
                    raise AssertionError(f"{path}:{node.lineno}: relative import above the package")
                base = ".".join(base + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "desra_fast":
                base = node.module
            else:
                continue
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((sub if sub in known or sub in LEAVES else base, node.lineno))
    return out


def import_graph():
    mods = package_modules()
    graph = {}
    for mod, path in mods.items():
        graph[mod] = {}
        for target, line in imported_modules(mod, path, mods):
            for leaf in LEAVES:
                if target == leaf or target.startswith(leaf + "."):
                    target = leaf
            if target != mod:
                graph[mod].setdefault(target, line)
    return mods, graph


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def find_cycles(graph):
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, sccs = {}, {}, set(), [], []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, it = work[-1]
            advanced = False
            for w in it:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    sccs.append(sorted(comp))
    return sccs


def describe_cycle(graph, comp, mods):
    """One concrete cycle inside a strongly connected component, with file:line of each edge."""
    members = set(comp)
    start = comp[0]
    # breadth-first back to start, inside the component
    prev, frontier = {start: None}, [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v]):
                if w == start:
                    path = [v]
                    while prev[path[-1]] is not None:
                        path.append(prev[path[-1]])
                    path = path[::-1] + [start]
                    return " -> ".join(f"{a} ({mods[a].relative_to(ROOT)}:{graph[a][b]})"
                                       for a, b in zip(path, path[1:])) + f" -> {start}"
                if w in members and w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return ", ".join(comp)  # pragma: no cover - a component always holds a cycle


def test_the_graph_sees_the_imports():
    # The walker must see relative, absolute and function-level imports, or the tests below
    # could pass on an empty graph.
    mods, graph = import_graph()
    assert len(mods) > 40
    assert "desra_fast.jobs.engine" in graph["desra_fast.jobs.detect"]
    assert "desra_fast.api" in graph["desra_fast.calibrate"]
    assert "desra_fast.models" in graph["desra_fast.jobs.sr"]  # imported inside a function
    assert "desra_fast._C" in graph["desra_fast._native"]


def test_cycle_finder_on_a_known_graph():
    g = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3, "d": 4}, "d": {}, "e": {"e2": 1}, "e2": {"e": 1}}
    assert sorted(map(tuple, find_cycles(g))) == [("a", "b", "c"), ("e", "e2")]
    assert find_cycles({"a": {"b": 1}, "b": {}}) == []


def test_no_import_cycles():
    mods, graph = import_graph()
    cycles = [describe_cycle(graph, comp, mods) for comp in find_cycles(graph)]
    assert not cycles, "import cycles in desra_fast:\n  " + "\n  ".join(cycles)


def test_layers_are_one_way():
    mods, graph = import_graph()
    bad = []
    for mod, targets in sorted(graph.items()):
        for target, line in sorted(targets.items()):
            if target in LEAVES or target not in mods:
                continue
            if layer_of(target) > layer_of(mod):
                bad.append(f"{mods[mod].relative_to(ROOT)}:{line}: {mod} ({LAYER_NAMES[layer_of(mod)]}) imports "
                           f"{target} ({LAYER_NAMES[layer_of(target)]})")
    assert not bad, "a lower layer imports a higher one:\n  " + "\n  ".join(bad)


def test_kernels_do_not_import_desra_fast():
    if not KERNELS.is_dir():
        pytest.skip("no kernels/ folder in this checkout")
    bad = []
    for path in sorted(KERNELS.rglob("*.py")):
        mod = "desra_fast.kernels." + ".".join(path.relative_to(KERNELS).with_suffix("").parts)
        mod = mod.removesuffix(".__init__")
        for target, line in imported_modules(mod, path, {}):
            if not target.startswith("desra_fast.kernels"):
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {target}")
    assert not bad, "kernels/ must not import desra_fast:\n  " + "\n  ".join(bad)


def test_file_sizes():
    too_long = []
    for mod, path in sorted(package_modules().items()):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_FILE_LINES:
            too_long.append(f"{path.relative_to(ROOT)}: {n} lines")
    assert not too_long, f"Python files in desra_fast/ over {MAX_FILE_LINES} lines:\n  " + "\n  ".join(too_long)


def test_function_sizes():
    too_long = []
    for mod, path in sorted(package_modules().items()):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name}() {n} lines")
    assert not too_long, (f"functions in desra_fast/ over {MAX_FUNCTION_LINES} lines (kernels/ excepted):\n  "
                          + "\n  ".join(too_long))
