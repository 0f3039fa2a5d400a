"""GAN generators ported to Flax NNX behind one interface (see :mod:`ported_gens.base`)."""

from __future__ import annotations

import importlib
import os

from .base import FAMILIES, Generator, Latents, build, load_dir, save_generator

# Family modules register themselves on import.
FAMILY_MODULES = ("dcgan", "pggan", "stylegan", "stylegan2", "stylegan3", "biggan")


def _import_families():
    for name in FAMILY_MODULES:
        importlib.import_module(f"ported_gens.{name}")


_import_families()


def models_dir() -> str:
    """Where converted zoo models are looked up by name: ``$PANDA_JAX_MODELS`` or
    ``~/.cache/panda-jax/models``."""
    return os.environ.get("PANDA_JAX_MODELS", os.path.join(os.path.expanduser("~"), ".cache", "panda-jax", "models"))


def load(path_or_name: str) -> Generator:
    """A generator from a converted directory (``panda-jax convert SRC OUT`` writes one), or
    from a zoo name (e.g. ``stylegan2_ffhq1024``) whose conversion is in :func:`models_dir`."""
    from . import zoo

    if not os.path.isdir(path_or_name) and path_or_name in zoo.ZOO:
        cached = os.path.join(models_dir(), path_or_name)
        if not os.path.isdir(cached):
            from panda_jax.errors import CheckpointError

            raise CheckpointError(
                f"{path_or_name!r} is a known model but has not been converted here; "
                f"run: panda-jax convert CHECKPOINT {cached} --arch {path_or_name}"
            )
        path_or_name = cached
    return load_dir(path_or_name)


__all__ = ["FAMILIES", "Generator", "Latents", "build", "load", "load_dir", "save_generator"]
