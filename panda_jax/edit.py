r"""Local edits: :math:`Z_i' = Z_i + \sum_t \alpha_t\, a_{j_t} \otimes p_{k_t}`.

``p_k`` is the min-max normalised sum of the chosen parts (as the original's
``edit_at_layer``), or a user mask in its place for pixel-level control. Resume the generator
at the same layer from the edited features to get the edited image.

Part and appearance indices are static (Python integers); features, alphas and masks may be
traced, so the edits compose with ``jit``, ``vmap`` (over samples or alphas) and ``grad``.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import checks
from .errors import ConfigError
from .factors import Factors, check_factors


def _minmax(x):
    lo, hi = jnp.min(x), jnp.max(x)
    return (x - lo) / jnp.where(hi > lo, hi - lo, 1.0)


def part_map(factors: Factors, part) -> jax.Array:
    """The min-max normalised sum of the chosen parts as an ``[H, W]`` map."""
    check_factors(factors)
    idx = checks.indices(part, factors.rank_s, "part")
    p = jnp.sum(jnp.asarray(factors.parts)[:, idx], axis=-1)
    return _minmax(p).reshape(factors.height, factors.width)


def _resize(mask, H: int, W: int):
    if np.ndim(mask) != 2:
        raise ConfigError(f"mask must be a 2-D [H, W] array; got shape {np.shape(mask)}")
    mask = jnp.asarray(mask, jnp.float32)
    checks.require_finite(mask, "the mask holds NaN/inf values; give a mask of finite values in [0, 1]",
                          error=ConfigError)
    if mask.shape != (H, W):
        mask = jax.image.resize(mask, (H, W), "linear")
    return mask


def _alphas(alpha, n: int) -> list:
    """``n`` strengths from a scalar or a sequence of ``n`` (finite; traced values pass)."""
    if isinstance(alpha, (list, tuple)):
        if len(alpha) != n:
            raise ConfigError(f"got {len(alpha)} alphas for {n} edits; give one alpha or one per edit")
        return [checks.real(a, "alpha") for a in alpha]
    if np.ndim(alpha) == 1 and not isinstance(alpha, str):
        if np.shape(alpha)[0] != n:
            raise ConfigError(f"got {np.shape(alpha)[0]} alphas for {n} edits; give one alpha or one per edit")
        a = jnp.asarray(alpha)
        checks.require_finite(a, "alpha holds NaN/inf; give finite strengths", error=ConfigError)
        return [a[i] for i in range(n)]
    if np.ndim(alpha) > 1:
        raise ConfigError(f"alpha must be a number or one number per edit; got shape {np.shape(alpha)}")
    a = checks.real(alpha, "alpha")
    return [a] * n


def _triples(factors, part, appearance, alpha, mask):
    """Normalise the arguments to lists of (map [H, W], appearance index, alpha)."""
    H, W = factors.height, factors.width
    multi = isinstance(appearance, (list, tuple)) or (isinstance(appearance, np.ndarray) and appearance.ndim == 1)
    apps = [checks.index(a, factors.rank_c, "appearance") for a in (appearance if multi else [appearance])]
    if mask is not None:
        masks = mask if isinstance(mask, (list, tuple)) else [mask] * len(apps)
        if len(masks) != len(apps):
            raise ConfigError(f"got {len(masks)} masks for {len(apps)} appearances; give one each")
        maps = [_resize(m, H, W) for m in masks]
    elif multi:
        if not isinstance(part, (list, tuple)) or len(part) != len(apps):
            raise ConfigError(
                f"with several appearances {apps}, give one part (an int or a list of ints) for each; got part={part!r}"
            )
        maps = [part_map(factors, p) for p in part]
    else:
        maps = [part_map(factors, part)]
    return maps, apps, _alphas(alpha, len(apps))


def direction(factors: Factors, part=None, appearance=0, alpha=1.0, mask=None) -> jax.Array:
    """The edit direction ``[H, W, C]``: ``sum_t alpha_t * p_t[h, w] * a_{j_t}``."""
    check_factors(factors)
    if part is None and mask is None:
        raise ConfigError("give a part (index or list of indices) or a mask to edit at")
    maps, apps, alphas = _triples(factors, part, appearance, alpha, mask)
    A = jnp.asarray(factors.appearance)
    d = jnp.zeros((factors.height, factors.width, factors.channels), A.dtype)
    for m, j, a in zip(maps, apps, alphas):
        d = d + jnp.asarray(a, A.dtype) * m[:, :, None] * A[:, j][None, None, :]
    return d


def _features_for(features, factors):
    x = checks.features(features, single=True)
    check_factors(factors, (1,) + tuple(x.shape[-3:]))
    return x


def edit(features, factors: Factors, part=None, appearance=0, alpha=1.0, mask=None) -> jax.Array:
    """Edited features ``[N, H, W, C]`` (or ``[H, W, C]`` for one sample).

    ``part`` is a part index or a list of indices (summed, then min-max normalised);
    ``appearance`` an appearance index; ``alpha`` the strength. For several edits at once give
    lists: ``appearance=[j1, j2]``, ``part=[k1, [k2, k3]]``, ``alpha=[a1, a2]`` (summed).
    ``mask`` (``[H, W]``, or any size: resized) replaces the part map: pixel-level control.
    """
    x = _features_for(features, factors)
    d = direction(factors, part, appearance, alpha, mask).astype(x.dtype)
    return x + d.reshape((1,) * (x.ndim - 3) + d.shape)


def edit_sweep(features, factors: Factors, part=None, appearance=0, alphas: Sequence[float] = (-1.0, 1.0),
               mask=None) -> jax.Array:
    """One edit at several strengths: ``[K, N, H, W, C]`` for ``K = len(alphas)`` (``[K, H, W, C]``
    for one sample)."""
    x = _features_for(features, factors)
    d = direction(factors, part, appearance, 1.0, mask).astype(x.dtype)
    if np.ndim(alphas) != 1:
        raise ConfigError(f"alphas must be a list of strengths; got {alphas!r}")
    al = jnp.asarray(alphas, x.dtype)
    checks.require_finite(al, "alphas hold NaN/inf; give finite strengths", error=ConfigError)
    al = al.reshape((-1,) + (1,) * x.ndim)
    return x[None] + al * d.reshape((1,) * (x.ndim - 2) + d.shape)
