r"""ROIR (paper Eq. 7), reconstruction error, and part statistics.

.. math:: \mathrm{ROIR}(M, X, X') = \frac{1}{N} \sum_i
   \frac{\| (1 - M) \odot (X_i - X'_i) \|_F}{\| M \odot (X_i - X'_i) \|_F}

the change **outside** the region of interest ``M`` over the change **inside** it: **lower is
more local** (the paper's Table 2: PandA 1.12-1.25, SeFa 3.50-6.82, GANSpace 3.12-4.95).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from . import checks
from .errors import ConfigError
from .factors import Factors, check_factors


def roir(mask, images, edited, *, per_sample: bool = False) -> jax.Array:
    """Paper Eq. 7: mean over samples of ``||(1 - M) * (X - X')||_F / ||M * (X - X')||_F``.

    ``mask``: ``[H, W]`` or ``[N, H, W]`` (bool or weights in [0, 1]) at image resolution;
    ``images``/``edited``: ``[N, H, W, C]`` (or one image ``[H, W, C]``). Lower is more local.
    Returns a scalar array, or the ``[N]`` per-sample ratios with ``per_sample=True``. A sample
    whose edit changed nothing scores 0.
    """
    if np.shape(images) != np.shape(edited) or np.ndim(images) not in (3, 4):
        raise ConfigError(
            f"images and edited must be [N, H, W, C] (or [H, W, C]) of one shape; got {np.shape(images)} "
            f"and {np.shape(edited)}"
        )
    x, y = jnp.asarray(images, jnp.float32), jnp.asarray(edited, jnp.float32)
    single = x.ndim == 3
    if single:
        x, y = x[None], y[None]
    if np.ndim(mask) == 2 and np.shape(mask) == x.shape[1:3]:
        m = jnp.broadcast_to(jnp.asarray(mask, jnp.float32)[None], x.shape[:3])
    elif np.shape(mask) == x.shape[:3] or (single and np.shape(mask) == x.shape[1:3]):
        m = jnp.asarray(mask, jnp.float32).reshape(x.shape[:3])
    else:
        raise ConfigError(
            f"mask must be [H, W] or [N, H, W] = {tuple(x.shape[:3])} (the images' size); got shape "
            f"{np.shape(mask)}. Resize it to the images first (panda_jax.resize_maps)"
        )
    if not checks.is_traced(m):
        mm = np.asarray(m)
        if not np.isfinite(mm).all():
            raise ConfigError("the mask holds NaN/inf values; give a mask of 0/1 (or weights in [0, 1])")
        flat = mm.reshape(mm.shape[0], -1)
        if (flat.max(axis=1) <= 0).any() or (flat.min(axis=1) >= 1).any():
            raise ConfigError(
                "the region of interest is empty or covers the whole image; ROIR compares the change "
                "outside the region with the change inside, so the mask needs pixels of both"
            )
    d = x - y
    inside = jnp.sqrt(jnp.sum((m[..., None] * d) ** 2, axis=(1, 2, 3)))
    outside = jnp.sqrt(jnp.sum(((1.0 - m[..., None]) * d) ** 2, axis=(1, 2, 3)))
    ratio = outside / jnp.maximum(inside, 1e-12)
    if single:
        return ratio[0]
    return ratio if per_sample else jnp.mean(ratio)


def reconstruction_error(features, factors: Factors, relative: bool = True) -> jax.Array:
    """``sum_i ||Z_i - A A^T Z_i P P^T||^2``, divided by ``sum_i ||Z_i||^2`` if ``relative``
    (a scalar array; one sample ``[H, W, C]`` works too)."""
    from .factorize import loss

    x = checks.features(features, single=True)
    x = x[None] if x.ndim == 3 else x
    check_factors(factors, x.shape)
    l = loss(x, jnp.asarray(factors.appearance, x.dtype), jnp.asarray(factors.parts, x.dtype))
    return l / jnp.sum(x * x) if relative else l


def part_stats(factors: Factors) -> dict:
    """Per part: area (fraction of positions above half its max), centroid (row, col), and the
    largest overlap (cosine) with another part."""
    check_factors(factors)
    P = np.asarray(factors.parts, np.float64)
    H, W = factors.height, factors.width
    norms = np.linalg.norm(P, axis=0) + 1e-12
    cos = (P.T @ P) / np.outer(norms, norms)
    np.fill_diagonal(cos, 0.0)
    rows, cols = np.divmod(np.arange(H * W), W)
    out = []
    for k in range(P.shape[1]):
        p = P[:, k]
        mx = p.max()
        w = p / p.sum() if p.sum() > 0 else np.full_like(p, 1.0 / p.size)
        out.append(
            {
                "part": k,
                "area": float(np.mean(p >= 0.5 * mx)) if mx > 0 else 0.0,
                "centroid": (float(w @ rows), float(w @ cols)),
                "max_overlap": float(cos[k].max()) if P.shape[1] > 1 else 0.0,
            }
        )
    return {"parts": out, "mean_max_overlap": float(np.mean([o["max_overlap"] for o in out]))}


__all__ = ["part_stats", "reconstruction_error", "roir"]
