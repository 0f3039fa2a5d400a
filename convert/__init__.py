"""Checkpoint conversion: PyTorch checkpoints -> converted directories for ``ported_gens.load``.

``convert(src, out_dir, arch=None)`` reads ``src`` safely (:mod:`convert.readers`), picks the
converter (below), builds the Flax generator with every parameter checked
(:mod:`convert.common`), and writes ``out_dir`` atomically.

Every converter module (listed in :data:`CONVERTER_MODULES`) offers the same protocol::

    NAME: str                       # the converter's name
    FAMILIES: tuple[str, ...]       # the generator families (ported_gens.base.FAMILIES) it produces
    DESCRIPTION: str                # the formats it reads, for error messages
    def claims(obj) -> bool         # does the read source look like this converter's?
    def config_for(obj, arch=None) -> tuple[str, dict]
                                    # (family, constructor config): stored or inferred from the
                                    # keys and shapes; arch (a family or a zoo name) overrides
    def rules(family, config) -> tuple[list[transforms.Rule], list[str]]
                                    # the key map, and the source keys deliberately not converted
    def to_generator(obj, arch=None) -> Generator
                                    # config_for + rules + common.build, plus the family's checks

Which converter: without ``arch``, the first module whose ``claims`` accepts the source; with
``arch``, the modules whose ``FAMILIES`` hold its family, the first that claims the source, else
the first of them (its errors then say why the source is not what ``arch`` asks for). Family
modules never hand a source to each other; adding a converter is one module and its entry in
:data:`CONVERTER_MODULES`.

Imports point one way: ``panda_jax.app -> convert -> ported_gens -> panda_jax`` (core). Inside
this package, family modules import :mod:`.common`, :mod:`.transforms` and :mod:`.readers`;
``common`` imports ``transforms``; ``transforms`` and ``readers`` import no module of the package
except ``transforms`` -> ``readers`` (for torch). No family module imports another family module
or this package, and nothing here imports ``panda_jax.app`` (``tests/test_convert_protocol.py``
checks the package's import graph).
"""

from __future__ import annotations

import importlib
import os
from typing import Any

from panda_jax.errors import CheckpointError

# Converter modules, asked in this order.
CONVERTER_MODULES = ("dcgan", "genforce", "nvlabs_stylegan2", "stylegan3", "biggan", "rosinality")


def converters():
    """The converter modules, in the order they are asked."""
    return [importlib.import_module(f"convert.{name}") for name in CONVERTER_MODULES]


def _by_arch(arch: str, obj: Any = None):
    """The converter for ``--arch``: of those producing its family, the first that claims ``obj``
    (or the first of them)."""
    from ported_gens import zoo

    family = zoo.family_of(arch)
    candidates = [mod for mod in converters() if family in mod.FAMILIES]
    if not candidates:
        raise CheckpointError(
            f"no converter for architecture {arch!r} (family {family!r}); "
            f"known converters: {[m.NAME for m in converters()]}"
        )
    return next((mod for mod in candidates if obj is not None and mod.claims(obj)), candidates[0])


def converter_for(obj: Any, arch: str | None = None, where: str = "the checkpoint"):
    """The converter module for a read source (``where`` names it in the error)."""
    if arch:
        return _by_arch(arch, obj)
    for mod in converters():
        if mod.claims(obj):
            return mod
    formats = ", ".join(mod.DESCRIPTION for mod in converters())
    raise CheckpointError(
        f"{where} does not look like any supported generator checkpoint ({formats}); "
        "if it is one of these, pass --arch NAME"
    )


def generator_from(obj: Any, arch: str | None = None):
    """The Flax generator converted from a source already read by :func:`convert.readers.read`."""
    return converter_for(obj, arch).to_generator(obj, arch)


def to_generator(src: str, arch: str | None = None):
    """The Flax generator converted from ``src`` (not written anywhere)."""
    from . import readers

    obj = readers.read(src)
    return converter_for(obj, arch, repr(src)).to_generator(obj, arch)


def convert(src: str, out_dir: str, arch: str | None = None, *, force: bool = False) -> str:
    """Convert ``src`` (a checkpoint file or a HuggingFace folder) into ``out_dir``.

    ``out_dir`` must be new or empty; an earlier conversion there is replaced only with
    ``force=True``. Anything else, or an output that overlaps the source, is refused before the
    checkpoint is read.
    """
    from ported_gens.base import check_model_out, save_generator

    from . import readers

    check_model_out(out_dir, force, [src])
    G = to_generator(src, arch)
    source = {"file": os.path.basename(os.path.normpath(src)), "arch": arch}
    if os.path.isfile(src):
        source["sha256"] = readers.sha256(src)
    elif os.path.isdir(src):  # a HuggingFace folder: hash each file that was read
        source["sha256"] = {
            name: readers.sha256(os.path.join(src, name))
            for name in sorted(os.listdir(src))
            if os.path.isfile(os.path.join(src, name))
        }
    save_generator(G, out_dir, source, force=force, sources=[src])
    return out_dir
