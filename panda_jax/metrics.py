r"""ROIR (paper Eq. 7), reconstruction error, and part statistics.

.. math:: \mathrm{ROIR}(M, X, X') = \frac{1}{N} \sum_i
   \frac{\| (1 - M) \odot (X_i - X'_i) \|_F}{\| M \odot (X_i - X'_i) \|_F}

the change **outside** the region of interest ``M`` over the change **inside** it: **lower is
more local** (the paper's Table 2: PandA 1.12-1.25, SeFa 3.50-6.82, GANSpace 3.12-4.95).

:func:`swd` is the Laplacian-pyramid sliced Wasserstein distance between two image sets
(Karras et al., 2018, "Progressive Growing of GANs", section 5 and their
``metrics/sliced_wasserstein.py``): it needs no pretrained network.
"""

from __future__ import annotations

from functools import partial

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


# ---- sliced Wasserstein distance ----------------------------------------------------------------

_BINOMIAL = np.array([1.0, 4.0, 6.0, 4.0, 1.0], np.float32) / 16.0  # cv2.pyrDown's 5x5 kernel, separable


def _blur(x, gain: float = 1.0):
    """The 5x5 binomial filter on ``[N, H, W, C]`` with mirrored borders (scipy's ``mode='mirror'``)."""
    k = jnp.asarray(_BINOMIAL * np.sqrt(gain), x.dtype)
    x = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    H, W = x.shape[1] - 4, x.shape[2] - 4
    x = sum(k[i] * x[:, i:i + H] for i in range(5))
    return sum(k[i] * x[:, :, i:i + W] for i in range(5))


def laplacian_pyramid(images, levels: int) -> list:
    """Laplacian pyramid of ``[N, H, W, C]`` images, finest first (as the reference code builds it:
    each level minus the upsampled next; the last level is the coarse Gaussian)."""
    pyr = [jnp.asarray(images, jnp.float32)]
    for _ in range(1, levels):
        down = _blur(pyr[-1])[:, ::2, ::2]
        up = jnp.zeros(pyr[-1].shape, down.dtype).at[:, ::2, ::2].set(down)
        pyr[-1] = pyr[-1] - _blur(up, gain=16.0) * 0.25  # pyrUp: the kernel x 4 on the zero-filled image
        pyr.append(down)
    return pyr


def _descriptors(level, key, per_image: int, patch: int):
    """``per_image`` random ``patch x patch`` neighbourhoods of every image, flattened."""
    N, H, W, C = level.shape
    r = patch // 2
    ky, kx = jax.random.split(key)
    ys = jax.random.randint(ky, (N, per_image), r, H - r)
    xs = jax.random.randint(kx, (N, per_image), r, W - r)
    off = jnp.arange(-r, r + 1)
    rows = ys[:, :, None, None] + off[None, None, :, None]
    cols = xs[:, :, None, None] + off[None, None, None, :]
    n = jnp.arange(N)[:, None, None, None]
    return level[n, rows, cols].reshape(N * per_image, patch * patch * C)


def sliced_wasserstein(a, b, key, *, directions: int = 128, repeats: int = 4):
    """Sliced Wasserstein distance between two equal-size point sets ``[M, D]``: the mean over
    ``repeats x directions`` random unit directions of the mean absolute difference between the
    sorted projections (the reference code's ``sliced_wasserstein``)."""
    out = []
    for k in jax.random.split(key, repeats):
        d = jax.random.normal(k, (a.shape[1], directions), a.dtype)
        d = d / jnp.linalg.norm(d, axis=0, keepdims=True)
        pa, pb = jnp.sort(a @ d, axis=0), jnp.sort(b @ d, axis=0)
        out.append(jnp.mean(jnp.abs(pa - pb)))
    return jnp.mean(jnp.stack(out))


def swd(images_a, images_b, key=None, *, per_image: int = 128, patch: int = 7, min_resolution: int = 16,
        directions: int = 128, repeats: int = 4) -> dict:
    """Laplacian-pyramid sliced Wasserstein distance (Karras et al., 2018) between two image sets
    ``[N, H, W, C]`` of one size, per pyramid level (finest first) and averaged; values x 1e3 as the
    paper reports them. Descriptors are ``patch x patch`` neighbourhoods, ``per_image`` per image and
    level, normalised per colour channel, each set by its own statistics (as the reference code,
    whose defaults these are: 128 descriptors per image, 4 repeats of 128 directions).
    Pyramid levels run from the full size down to ``min_resolution``.

    The descriptors are drawn in one jitted program; the projections are sorted on the host with
    NumPy, several times faster than XLA's CPU sort at these sizes (a set of 1,000 images holds
    128,000 descriptors per level). The result equals :func:`sliced_wasserstein` on the same
    descriptors and key.
    """
    key = checks.key(key)
    if np.shape(images_a) != np.shape(images_b) or np.ndim(images_a) != 4:
        raise ConfigError(f"swd needs two image sets [N, H, W, C] of one shape; got {np.shape(images_a)} and "
                          f"{np.shape(images_b)}")
    N, H, W, C = np.shape(images_a)
    levels, res = 0, min(H, W)
    while res >= min_resolution and res >= patch:
        levels, res = levels + 1, res // 2
    if levels == 0:
        raise ConfigError(f"images of {H}x{W} are smaller than min_resolution {min_resolution}; use larger images")
    descs = _swd_descriptors(jnp.asarray(images_a, jnp.float32), jnp.asarray(images_b, jnp.float32), key,
                             levels=levels, per_image=per_image, patch=patch)
    per_level = []
    for lev, (da, db) in enumerate(descs):
        k_s = jax.random.split(jax.random.fold_in(key, lev), 3)[2]
        per_level.append(_sliced_wasserstein_host(np.asarray(da), np.asarray(db), k_s, directions, repeats) * 1e3)
    return {"levels": [int(min(H, W)) >> i for i in range(levels)], "per_level": per_level,
            "mean": float(np.mean(per_level))}


def _sliced_wasserstein_host(a, b, key, directions: int, repeats: int) -> float:
    """:func:`sliced_wasserstein` with the sorts in NumPy (same directions for the same key)."""
    out = []
    for k in jax.random.split(key, repeats):
        d = jax.random.normal(k, (a.shape[1], directions), jnp.float32)
        d = np.asarray(d / jnp.linalg.norm(d, axis=0, keepdims=True))
        pa, pb = np.sort(a @ d, axis=0), np.sort(b @ d, axis=0)
        out.append(float(np.mean(np.abs(pa - pb), dtype=np.float64)))
    return float(np.mean(out))


@partial(jax.jit, static_argnames=("levels", "per_image", "patch"))
def _swd_descriptors(a, b, key, *, levels, per_image, patch):
    """Each level's normalised descriptors of both sets, keyed as :func:`swd` documents."""
    C = a.shape[-1]
    out = []
    for lev, (la, lb) in enumerate(zip(laplacian_pyramid(a, levels), laplacian_pyramid(b, levels))):
        k_a, k_b, _ = jax.random.split(jax.random.fold_in(key, lev), 3)
        out.append((_normalise(_descriptors(la, k_a, per_image, patch), C),
                    _normalise(_descriptors(lb, k_b, per_image, patch), C)))
    return out


def _normalise(desc, C: int):
    """Zero mean, unit standard deviation per colour channel over all descriptors."""
    d = desc.reshape(desc.shape[0], -1, C)
    d = (d - jnp.mean(d, axis=(0, 1), keepdims=True)) / jnp.maximum(jnp.std(d, axis=(0, 1), keepdims=True), 1e-8)
    return d.reshape(desc.shape[0], -1)


__all__ = ["laplacian_pyramid", "part_stats", "reconstruction_error", "roir", "sliced_wasserstein", "swd"]
