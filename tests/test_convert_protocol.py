"""The converter protocol of the ``convert`` package: every converter module offers the same
names and signatures, its rule table fills the abstract Flax model of a small config exactly
(bare shapes only, no weights), and the package's modules import each other without cycles."""

from __future__ import annotations

import ast
import importlib
import inspect
import os

import numpy as np
import pytest

import convert
from convert import readers
from convert.common import check_keymap
from convert.transforms import Rule, apply_rules
from panda_jax.errors import CheckpointError
from ported_gens.base import abstract

PACKAGE = os.path.dirname(os.path.abspath(convert.__file__))

SIGNATURES = {
    "claims": ["obj"],
    "config_for": ["obj", "arch"],
    "rules": ["family", "config"],
    "to_generator": ["obj", "arch"],
}


@pytest.mark.parametrize("name", convert.CONVERTER_MODULES)
def test_every_converter_has_the_protocol(name):
    mod = importlib.import_module(f"convert.{name}")
    assert isinstance(mod.NAME, str) and mod.NAME
    assert isinstance(mod.FAMILIES, tuple) and mod.FAMILIES and all(isinstance(f, str) for f in mod.FAMILIES)
    assert isinstance(mod.DESCRIPTION, str) and mod.DESCRIPTION
    for fn, params in SIGNATURES.items():
        sig = inspect.signature(getattr(mod, fn))
        assert list(sig.parameters) == params, f"{name}.{fn}{sig}"
        if "arch" in params:
            assert sig.parameters["arch"].default is None, f"{name}.{fn}: arch must default to None"
    assert [m.__name__ for m in convert.converters()] == [f"convert.{n}" for n in convert.CONVERTER_MODULES]


def test_unknown_sources_list_every_converter():
    with pytest.raises(CheckpointError, match="does not look like any supported") as e:
        convert.converter_for({"fc.weight": np.zeros((3, 4), np.float32)})
    for mod in convert.converters():
        assert mod.DESCRIPTION in str(e.value)


# ---- rule tables at small configs, on bare shapes -----------------------------------------


def _dcgan_shapes(nz=16, ngf=8, nc=1, blocks=3):
    """The state-dict shapes of a DCGAN-tutorial generator (no torch needed)."""
    chans = [nz] + [ngf * 2 ** (blocks - 1 - b) for b in range(blocks)] + [nc]
    shapes = {}
    for i in range(blocks + 1):
        shapes[f"main.{3 * i}.weight"] = (chans[i], chans[i + 1], 4, 4)
        if i < blocks:
            bn = f"main.{3 * i + 1}"
            shapes.update({f"{bn}.{p}": (chans[i + 1],) for p in ("weight", "bias", "running_mean", "running_var")})
            shapes[f"{bn}.num_batches_tracked"] = ()
    return shapes


def _shapes_of(testvectors, path):
    obj = readers.read(os.path.join(testvectors, path))
    if isinstance(obj, dict) and "generator_smooth" in obj:  # genforce
        obj = obj["generator_smooth"]
    if isinstance(obj, dict) and "g_ema" in obj:  # rosinality: the generator and its latent_avg
        obj = {**obj["g_ema"], "latent_avg": obj["latent_avg"]}
    if isinstance(obj, dict) and obj.get("kind") == "hf_folder":
        obj = obj["state_dict"]
    return {k: tuple(np.shape(v)) for k, v in obj.items()}


SMALL = [
    ("dcgan", None),
    ("genforce", "pggan_genforce/checkpoint.pth"),
    ("genforce", "stylegan_genforce/checkpoint.pth"),
    ("genforce", "stylegan2_genforce/checkpoint.pth"),
    ("nvlabs_stylegan2", "stylegan2_ada_nvlabs/G_ema.pt"),
    ("stylegan3", "stylegan3_t/G_ema.pt"),
    ("stylegan3", "stylegan3_r/G_ema.pt"),
    ("biggan", "biggan_deep/pytorch_model.bin"),
    ("rosinality", "stylegan2_rosinality/checkpoint_weights_only.pt"),
]


@pytest.mark.parametrize("name,path", SMALL, ids=[p or n for n, p in SMALL])
def test_rules_fill_the_abstract_model(testvectors, name, path):
    mod = importlib.import_module(f"convert.{name}")
    shapes = _dcgan_shapes() if path is None else _shapes_of(testvectors, path)
    assert mod.claims(shapes) and convert.converter_for(shapes) is mod
    family, config = mod.config_for(shapes)
    assert family in mod.FAMILIES
    rules, ignored = mod.rules(family, config)
    assert rules and all(isinstance(r, Rule) for r in rules)
    assert len({r.path for r in rules}) == len(rules), "two rules fill the same parameter"
    params, used, present = apply_rules(rules, ignored, shapes)
    # raises on any parameter not filled, of another shape, unknown, or any tensor unaccounted for
    check_keymap(abstract(family, config), params, source_keys=shapes, used=used, ignored=present)
    assert sorted(used + present) == sorted(shapes)
    assert all(isinstance(v, tuple) for v in params.values())  # shapes in, shapes out: no weights


# ---- the import graph -------------------------------------------------------------------


def _intra_imports(path: str, modules: set[str]) -> set[str]:
    """The ``convert`` modules that the file at ``path`` imports anywhere (module level or
    inside functions), as names relative to the package ('' for the package itself)."""
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    found = set()

    def add(dotted: str, names=()):
        parts = dotted.split(".")
        if parts[0] != "convert":
            return
        if len(parts) > 1:
            found.add(parts[1])
            return
        subs = [n for n in names if n in modules]
        found.update(subs)
        if len(subs) < len(names):  # names from the package's __init__
            found.add("")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, () if "." in alias.name else ("",))
        elif isinstance(node, ast.ImportFrom):
            base = "convert" if node.level else ""
            if node.level > 1:
                raise AssertionError(f"{path}: imports from above the package")
            dotted = ".".join(p for p in (base, node.module or "") if p)
            add(dotted, tuple(a.name for a in node.names))
        elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "CONVERTER_MODULES" for t in node.targets):
            found.update(ast.literal_eval(node.value))  # imported by name (importlib)
    return found - {""} if path.endswith("__init__.py") else found


def _graph():
    files = {f[:-3]: os.path.join(PACKAGE, f) for f in os.listdir(PACKAGE) if f.endswith(".py")}
    modules = set(files) - {"__init__"}
    return {("" if m == "__init__" else m): _intra_imports(p, modules) for m, p in files.items()}


def test_no_module_of_convert_imports_one_that_imports_it_back():
    graph = _graph()
    assert graph[""] >= set(convert.CONVERTER_MODULES)
    assert "transforms" in graph and "common" in graph
    cycles = []

    def visit(node, stack):
        for nxt in sorted(graph.get(node, ())):
            if nxt in stack:
                cycles.append(" -> ".join(f"convert.{m}" if m else "convert" for m in stack[stack.index(nxt):] + [nxt]))
            else:
                visit(nxt, stack + [nxt])

    for start in graph:
        visit(start, [start])
    assert not cycles, "import cycles in the convert package: " + "; ".join(sorted(set(cycles)))


def test_family_modules_import_no_other_family_module():
    graph = _graph()
    families = set(convert.CONVERTER_MODULES)
    for name in families:
        assert not graph[name] & (families | {""}), f"convert.{name} imports {sorted(graph[name] & (families | {''}))}"


def _imports_anywhere(path: str) -> set[str]:
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_imports_point_one_way():
    """convert -> ported_gens -> panda_jax (core): convert never imports the command-line layer,
    and ported_gens never imports convert."""
    for f in sorted(os.listdir(PACKAGE)):
        if f.endswith(".py"):
            bad = {m for m in _imports_anywhere(os.path.join(PACKAGE, f)) if m.startswith(("panda_jax.app", "panda_jax.cli"))}
            assert not bad, f"convert/{f} imports {sorted(bad)}"
    gens = os.path.join(os.path.dirname(PACKAGE), "ported_gens")
    for f in sorted(os.listdir(gens)):
        if f.endswith(".py"):
            bad = {m for m in _imports_anywhere(os.path.join(gens, f)) if m == "convert" or m.startswith("convert.")}
            assert not bad, f"ported_gens/{f} imports {sorted(bad)}"
