"""The import graph of panda_jax, ported_gens and convert: dependencies point one way
(panda_jax.app -> convert -> ported_gens -> panda_jax core) and no module imports one that
imports it back. Imports inside functions count too."""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("panda_jax", "ported_gens", "convert")


def modules() -> dict[str, str]:
    out = {}
    for pkg in PACKAGES:
        for d, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(d, f), ROOT)[:-3].replace(os.sep, ".")
                    out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(d, f)
    return out


def imports(name: str, path: str, known: set[str]) -> set[str]:
    """Modules of ours that ``name`` imports (absolute names), anywhere in the file."""
    is_pkg = path.endswith("__init__.py")
    base = name if is_pkg else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = base.split(".")
                mod = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                mod = node.module
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.add(sub if sub in known else mod)
    return {m for m in out if m.split(".")[0] in PACKAGES and m in known}


def graph():
    mods = modules()
    return {m: imports(m, p, set(mods)) for m, p in mods.items()}


def layer(m: str) -> str:
    if m == "panda_jax.app" or m.startswith("panda_jax.app."):
        return "app"
    return m.split(".")[0]


ALLOWED = {  # what each layer may import
    "panda_jax": {"panda_jax"},
    "ported_gens": {"ported_gens", "panda_jax"},
    "convert": {"convert", "ported_gens", "panda_jax"},
    "app": {"app", "convert", "ported_gens", "panda_jax"},
}
HEAVY_FOR_CORE = ("torch", "flax", "PIL", "matplotlib")


def test_dependencies_point_one_way():
    g = graph()
    bad = sorted(f"{m} -> {t}" for m, ts in g.items() for t in ts if layer(t) not in ALLOWED[layer(m)])
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_core_imports_no_heavy_library():
    bad = []
    for m, path in modules().items():
        if layer(m) != "panda_jax":
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            bad += [f"{m} -> {n}" for n in names if n.split(".")[0] in HEAVY_FOR_CORE]
    assert not bad, bad


def test_no_import_cycles():
    g = graph()
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def strong(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g[v]:
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            # a package importing its own submodules, which import the package's siblings, is not a
            # cycle between modules; only components of two or more plain modules are
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in g:
        if v not in index:
            strong(v)
    assert not cycles, f"modules that import each other: {cycles}"
