"""Saliency maps ``a_k^T Z_i``, thresholded masks, and background removal.

As in the original's localisation notebook: the coordinates of each sample in the appearance
basis give one saliency map per appearance; thresholding at the mean over samples and
positions gives masks; the background appearance's mask removes the background.

Every function takes a batch ``[N, ...]`` or one sample, and composes with ``jit``, ``vmap``
and ``grad`` (``localize``'s ``"mean"`` threshold is the mean over the samples it is given: under
``vmap`` over samples, pass the threshold computed on the batch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import checks
from .errors import ConfigError
from .factors import Factors, check_factors


def saliency(features, factors: Factors) -> jax.Array:
    """``A^T Z_i`` as maps ``[N, H, W, R_C]`` (``[H, W, R_C]`` for one sample ``[H, W, C]``)."""
    x = checks.features(features, single=True)
    check_factors(factors, (1,) + tuple(x.shape[-3:]))
    return jnp.einsum("...hwc,ck->...hwk", x, jnp.asarray(factors.appearance, x.dtype))


def localize(saliency_maps, threshold="mean") -> jax.Array:
    """Boolean masks ``saliency >= threshold``, per appearance.

    ``threshold`` is ``"mean"`` (each appearance's mean over all samples and positions, as the
    original), a float, or an array with one value per appearance.
    """
    s = jnp.asarray(saliency_maps)
    if s.ndim < 3:
        raise ConfigError(f"saliency maps must be [N, H, W, R_C] (or [H, W, R_C]); got shape {s.shape}")
    if isinstance(threshold, str):
        if threshold != "mean":
            raise ConfigError(f"threshold must be 'mean', a float, or one value per appearance; got {threshold!r}")
        t = jnp.mean(s.reshape(-1, s.shape[-1]), axis=0)
    elif np.ndim(threshold) == 0:
        t = jnp.asarray(checks.real(threshold, "threshold ('mean' or a finite number)"), s.dtype)
    else:
        t = jnp.asarray(threshold, s.dtype)
        if t.ndim > 1 or t.shape[0] != s.shape[-1]:
            raise ConfigError(f"threshold must be a scalar or have {s.shape[-1]} values; got shape {t.shape}")
        checks.require_finite(t, "threshold holds NaN/inf; give finite thresholds", error=ConfigError)
    return s >= jnp.broadcast_to(t, s.shape[-1:]).reshape((1,) * (s.ndim - 1) + (-1,))


def resize_maps(maps, size: tuple[int, int], method: str = "linear") -> jax.Array:
    """Maps ``[N, h, w, K]``, ``[N, h, w]`` or ``[h, w]`` resized to ``size = (H, W)``."""
    m = jnp.asarray(maps)
    H, W = size
    if m.ndim == 2:
        return jax.image.resize(m.astype(jnp.float32), (H, W), method)
    if m.ndim == 3:
        return jax.image.resize(m.astype(jnp.float32), (m.shape[0], H, W), method)
    if m.ndim == 4:
        return jax.image.resize(m.astype(jnp.float32), (m.shape[0], H, W, m.shape[3]), method)
    raise ConfigError(f"maps must have 2 to 4 axes; got shape {m.shape}")


def remove_background(images, background, fill: float = 1.0) -> jax.Array:
    """Images ``[N, H, W, 3]`` with the background (``background`` true, ``[N, H, W]`` at
    any resolution) replaced by ``fill`` (1.0 is white in [-1, 1] images). One image
    ``[H, W, 3]`` takes one mask ``[h, w]``."""
    x = jnp.asarray(images)
    b = jnp.asarray(background)
    if x.ndim == 3 and b.ndim == 2:
        return remove_background(x[None], b[None], fill)[0]
    if x.ndim != 4 or b.ndim != 3 or b.shape[0] != x.shape[0]:
        raise ConfigError(
            f"background masks must be [N, H, W] for images [N, H, W, 3] (or [H, W] for one image); "
            f"got masks {b.shape} for images {x.shape}"
        )
    fill = checks.real(fill, "fill")
    if b.shape[1:] != x.shape[1:3]:
        b = resize_maps(b.astype(jnp.float32), x.shape[1:3], "nearest") >= 0.5
    return jnp.where(b[..., None].astype(bool), jnp.asarray(fill, x.dtype), x)
