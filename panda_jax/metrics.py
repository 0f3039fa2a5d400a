r"""ROIR (paper Eq. 7), reconstruction error, and part statistics.

.. math:: \mathrm{ROIR}(M, X, X') = \frac{1}{N} \sum_i
   \frac{\| M \odot (X_i - X'_i) \|_1}{\| (1 - M) \odot (X_i - X'_i) \|_1}

High values mean the edit changed the region of interest ``M`` much more than the rest.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from .errors import ConfigError
from .factorize import check_features
from .factors import Factors, check_factors


def roir(mask, images, edited) -> float:
    """Paper Eq. 7. ``mask``: ``[H, W]`` or ``[N, H, W]`` (bool or [0, 1]) at image resolution;
    ``images``/``edited``: ``[N, H, W, C]``."""
    x, y = jnp.asarray(images, jnp.float32), jnp.asarray(edited, jnp.float32)
    if x.shape != y.shape or x.ndim != 4:
        raise ConfigError(f"images and edited must be [N, H, W, C] of one shape; got {x.shape} and {y.shape}")
    m = jnp.asarray(mask, jnp.float32)
    if m.ndim == 2:
        m = jnp.broadcast_to(m[None], x.shape[:3])
    if m.shape != x.shape[:3]:
        raise ConfigError(f"mask must be [H, W] or [N, H, W] = {x.shape[:3]}; got {m.shape} (resize it first)")
    d = jnp.abs(x - y)
    inside = jnp.sum(m[..., None] * d, axis=(1, 2, 3))
    outside = jnp.sum((1.0 - m[..., None]) * d, axis=(1, 2, 3))
    return float(jnp.mean(inside / jnp.maximum(outside, 1e-12)))


def reconstruction_error(features, factors: Factors, relative: bool = True) -> float:
    """``sum_i ||Z_i - A A^T Z_i P P^T||^2``, divided by ``sum_i ||Z_i||^2`` if ``relative``."""
    from .factorize import loss

    x = check_features(features)
    check_factors(factors, x.shape)
    l = float(loss(x, jnp.asarray(factors.appearance, x.dtype), jnp.asarray(factors.parts, x.dtype)))
    return l / float(jnp.sum(x * x)) if relative else l


def part_stats(factors: Factors) -> dict:
    """Per part: area (fraction of positions above half its max), centroid (row, col), and the
    largest overlap (cosine) with another part."""
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
