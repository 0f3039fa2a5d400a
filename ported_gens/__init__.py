"""GAN generators ported to Flax NNX behind one interface (see :mod:`ported_gens.base`)."""

from __future__ import annotations

import importlib

from .base import FAMILIES, Generator, Latents, build, load_dir, save_generator

# Family modules register themselves on import.
FAMILY_MODULES = ("dcgan", "pggan", "stylegan", "stylegan2", "stylegan3", "biggan")


def _import_families():
    for name in FAMILY_MODULES:
        try:
            importlib.import_module(f"ported_gens.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"ported_gens.{name}":
                raise


_import_families()


def load(path: str) -> Generator:
    """A generator from a converted directory (``panda-jax convert SRC OUT`` writes one)."""
    return load_dir(path)


__all__ = ["FAMILIES", "Generator", "Latents", "build", "load", "load_dir", "save_generator"]
