"""Checkpoint conversion: PyTorch checkpoints -> converted directories for ``ported_gens.load``.

``convert(src, out_dir, arch=None)`` reads ``src`` safely (:mod:`convert.readers`), asks each
family converter whether it recognises the contents (or uses ``arch``: a family name or a zoo
name from :mod:`ported_gens.zoo`), builds the Flax generator with every parameter checked
(:mod:`convert.common`), and writes ``out_dir`` atomically.

A family converter module defines::

    NAME: str                                   # the family it produces
    def claims(obj) -> bool                     # does the read source look like this family?
    def to_generator(obj, arch=None) -> Generator
"""

from __future__ import annotations

import importlib
import os

from panda_jax.errors import CheckpointError

# Family converter modules, asked in this order.
CONVERTER_MODULES = ("dcgan", "genforce", "nvlabs_stylegan2", "stylegan3", "biggan")


def converters():
    """The family converter modules, in the order they are asked."""
    return [importlib.import_module(f"convert.{name}") for name in CONVERTER_MODULES]


def _by_arch(arch: str):
    from ported_gens import zoo

    family = zoo.family_of(arch)
    for mod in converters():
        if getattr(mod, "NAME", None) == family or family in getattr(mod, "FAMILIES", ()):
            return mod
    raise CheckpointError(
        f"no converter for architecture {arch!r} (family {family!r}); "
        f"known converters: {[m.NAME for m in converters()]}"
    )


def to_generator(src: str, arch: str | None = None):
    """The Flax generator converted from ``src`` (not written anywhere)."""
    from . import readers

    obj = readers.read(src)
    if arch:
        return _by_arch(arch).to_generator(obj, arch)
    for mod in converters():
        if mod.claims(obj):
            return mod.to_generator(obj, None)
    raise CheckpointError(
        f"{src!r} does not look like any supported generator checkpoint "
        "(DCGAN, genforce PGGAN/StyleGAN/StyleGAN2, NVlabs StyleGAN2-ADA/StyleGAN3, HuggingFace BigGAN-deep); "
        "if it is one of these, pass --arch NAME"
    )


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
