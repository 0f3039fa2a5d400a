"""GAN generators ported to Flax NNX behind one interface (see :mod:`ported_gens.base`).

What lives where:

- ``base.py``: the :class:`Generator` interface (``features`` / ``render`` / ``generate``; the
  pure function forms ``sample_fn`` / ``image_fn`` / ``image_fn_w``; the W-space methods and
  ``first_projection_weights``), :class:`~ported_gens.base.StyleGenerator` (families with a W
  space), :class:`Latents`, the family registry (``FAMILIES``, ``build``, ``abstract``) and the
  converted-directory format (``save_generator``, ``load_dir``, ``check_model_out``,
  ``is_converted_model``).
- ``config.py``: :class:`~ported_gens.config.FamilyConfig`, the frozen-dataclass base of the
  family configs, and the setting kinds that check them once.
- ``ops.py``: array operations and layers the families share (explicit broadcasts ``row`` /
  ``per_sample``, convolutions, ``upfirdn2d``, modulated convolution, equalised-LR layers, the
  genforce mapping network, truncation).
- ``genforce_common.py``: what genforce's PGGAN, StyleGAN and StyleGAN2 share (resolutions,
  channel widths, the truncation default, ``GenforceConfig``).
- one module per family, each a ``<Family>Config`` and the generator: ``dcgan.py``,
  ``pggan.py``, ``stylegan.py``, ``stylegan2.py`` (genforce's and rosinality's), ``stylegan3.py``,
  ``biggan.py``
  (``imagenet.py``: BigGAN's class names).
- ``zoo.py``: known model names -> (family, config settings).

What may import what: ``ported_gens`` imports from ``panda_jax`` only its core leaves
(``panda_jax.errors``, ``panda_jax._io``), never ``convert``, the command line
(``panda_jax.app``) or anything else that imports ``ported_gens``. Inside:
``config`` imports nothing of ours; ``base`` imports ``config``; ``ops`` imports ``base``;
``genforce_common`` imports ``config`` and ``ops``; a family imports those and no other family;
``zoo`` imports the families whose presets it lists. Adding a family is a module here (its
config and generator, registered with ``@register_family``), its import below, a converter in
``convert/`` and tests.
"""

from __future__ import annotations

import os

from .base import FAMILIES, Generator, Latents, StyleGenerator, build, load_dir, save_generator
from .config import FamilyConfig

# The family modules register themselves (FAMILIES) on import.
from .dcgan import DCGANConfig
from .pggan import PGGANConfig
from .stylegan import StyleGANConfig
from .stylegan2 import StyleGAN2Config, StyleGAN2RosinalityConfig
from .stylegan3 import StyleGAN3Config
from .biggan import BigGANConfig


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


__all__ = [
    "FAMILIES", "Generator", "StyleGenerator", "Latents", "build", "load", "load_dir", "save_generator",
    "FamilyConfig", "DCGANConfig", "PGGANConfig", "StyleGANConfig", "StyleGAN2Config", "StyleGAN2RosinalityConfig",
    "StyleGAN3Config", "BigGANConfig",
]
