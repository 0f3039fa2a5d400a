r"""Local edits: :math:`Z_i' = Z_i + \sum_t \alpha_t\, a_{j_t} \otimes p_{k_t}`.

``p_k`` is the min-max normalised sum of the chosen parts (as the original's
``edit_at_layer``), or a user mask in its place for pixel-level control. Resume the generator
at the same layer from the edited features to get the edited image.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .errors import ConfigError
from .factorize import check_features
from .factors import Factors, check_factors


def _minmax(x):
    lo, hi = jnp.min(x), jnp.max(x)
    return (x - lo) / jnp.where(hi > lo, hi - lo, 1.0)


def _as_index_list(v, n: int, what: str) -> list[int]:
    idx = [int(i) for i in np.atleast_1d(np.asarray(v)).ravel()]
    for i in idx:
        if not 0 <= i < n:
            raise ConfigError(f"{what} index {i} is out of range; the factors have {n} (use 0..{n - 1})")
    return idx


def part_map(factors: Factors, part) -> jax.Array:
    """The min-max normalised sum of the chosen parts as an ``[H, W]`` map."""
    idx = _as_index_list(part, factors.rank_s, "part")
    p = jnp.sum(jnp.asarray(factors.parts)[:, idx], axis=-1)
    return _minmax(p).reshape(factors.height, factors.width)


def _resize(mask, H: int, W: int):
    mask = jnp.asarray(mask, jnp.float32)
    if mask.ndim != 2:
        raise ConfigError(f"mask must be a 2-D [H, W] array; got shape {mask.shape}")
    if mask.shape != (H, W):
        mask = jax.image.resize(mask, (H, W), "linear")
    return mask


def _triples(factors, part, appearance, alpha, mask):
    """Normalise the arguments to lists of (map [H, W], appearance index, alpha)."""
    H, W = factors.height, factors.width
    multi = isinstance(appearance, (list, tuple, np.ndarray)) and np.ndim(appearance) == 1
    if multi:
        apps = [int(a) for a in appearance]
        if mask is not None:
            masks = mask if isinstance(mask, (list, tuple)) else [mask] * len(apps)
            maps = [_resize(m, H, W) for m in masks]
        else:
            if not isinstance(part, (list, tuple)) or len(part) != len(apps):
                raise ConfigError(
                    f"with several appearances {apps}, give one part (an int or a list of ints) for each; got part={part!r}"
                )
            maps = [part_map(factors, p) for p in part]
        alphas = list(np.broadcast_to(np.asarray(alpha, np.float32), (len(apps),)))
    else:
        apps = [int(appearance)]
        maps = [_resize(mask, H, W) if mask is not None else part_map(factors, part)]
        alphas = [alpha]
    if len(maps) != len(apps):
        raise ConfigError(f"got {len(maps)} masks for {len(apps)} appearances; give one each")
    _as_index_list(apps, factors.rank_c, "appearance")
    return maps, apps, alphas


def direction(factors: Factors, part=None, appearance=0, alpha=1.0, mask=None) -> jax.Array:
    """The edit direction ``[H, W, C]``: ``sum_t alpha_t * p_t[h, w] * a_{j_t}``."""
    if part is None and mask is None:
        raise ConfigError("give a part (index or list of indices) or a mask to edit at")
    maps, apps, alphas = _triples(factors, part, appearance, alpha, mask)
    A = jnp.asarray(factors.appearance)
    d = 0.0
    for m, j, a in zip(maps, apps, alphas):
        d = d + jnp.asarray(a, A.dtype) * m[:, :, None] * A[:, j][None, None, :]
    return d


def edit(features, factors: Factors, part=None, appearance=0, alpha=1.0, mask=None) -> jax.Array:
    """Edited features ``[N, H, W, C]``.

    ``part`` is a part index or a list of indices (summed, then min-max normalised);
    ``appearance`` an appearance index; ``alpha`` the strength. For several edits at once give
    lists: ``appearance=[j1, j2]``, ``part=[k1, [k2, k3]]``, ``alpha=[a1, a2]`` (summed).
    ``mask`` (``[H, W]``, or any size: resized) replaces the part map: pixel-level control.
    """
    x = check_features(features)
    check_factors(factors, x.shape)
    return x + direction(factors, part, appearance, alpha, mask)[None].astype(x.dtype)


def edit_sweep(features, factors: Factors, part=None, appearance=0, alphas: Sequence[float] = (-1.0, 1.0),
               mask=None) -> jax.Array:
    """One edit at several strengths: ``[K, N, H, W, C]`` for ``K = len(alphas)``."""
    x = check_features(features)
    check_factors(factors, x.shape)
    d = direction(factors, part, appearance, 1.0, mask).astype(x.dtype)
    al = jnp.asarray(alphas, x.dtype).reshape(-1, 1, 1, 1, 1)
    return x[None] + al * d[None, None]
