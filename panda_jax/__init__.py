"""panda-jax: parts and appearances in GAN feature maps (PandA, Oldfield et al., ICLR 2023) in JAX.

Fit appearances ``A [C, R_C]`` and non-negative parts ``P [S, R_S]`` to feature maps
``[N, H, W, C]`` (:func:`fit`, :func:`fit_stream`), refine parts per sample (:func:`refine`),
edit locally (:func:`edit`), localise concepts (:func:`saliency`, :func:`localize`) and measure
locality (:func:`roir`, paper Eq. 7: lower is more local).

This package is the method only (JAX and numpy): importing it loads no generator, converter,
torch, flax, PIL or matplotlib. The per-sample functions (``edit``, ``edit_sweep``,
``part_map``, ``saliency``, ``localize``, ``remove_background``, ``refine``, ``roir``,
``reconstruction_error``) compose with ``jit``, ``vmap`` and ``grad``; value checks (NaN/inf)
run on concrete inputs, and under :func:`checked` inside traces. ``fit`` and ``fit_stream`` are
host-driven loops. The command line, figures and reports live in :mod:`panda_jax.app`.
"""

from .checks import checked
from .edit import direction, edit, edit_sweep, part_map
from .errors import (
    CheckpointError,
    ConfigError,
    ConvergenceWarning,
    DirectionsError,
    DivergenceError,
    FactorsError,
    FeatureError,
    LayerError,
    PandaError,
    RankError,
)
from .factorize import fit, fit_stream, hosvd_init, loss, naive_loss
from .factors import Factors, load_factors, load_original, save_factors, save_original
from .loop import FitInterrupted, FitResult
from .localize import localize, remove_background, resize_maps, saliency
from .metrics import part_stats, reconstruction_error, roir, swd
from .refine import refine
from . import directions  # noqa: E402, F401  (the baselines: SeFa, GANSpace, ReSeFa)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "ConfigError", "ConvergenceWarning", "DirectionsError", "DivergenceError", "Factors",
    "FactorsError", "FeatureError", "FitInterrupted", "FitResult", "LayerError", "PandaError", "RankError", "checked",
    "direction", "edit", "edit_sweep", "fit", "fit_stream", "hosvd_init", "load_factors", "load_original",
    "localize", "loss", "naive_loss", "part_map", "part_stats", "reconstruction_error", "refine",
    "remove_background", "resize_maps", "roir", "saliency", "swd", "save_factors", "save_original",
]
