r"""ReSeFa: region-based semantic factorisation (Zhu et al., ICML 2022).

A direction ``v`` in the latent space changes the image by ``J v`` to first order, ``J`` the
Jacobian of the image with respect to the latent. A good *local* direction changes the pixels
inside a region a lot and those outside little; with ``J_f`` the Jacobian's rows inside the
region and ``J_b`` those outside, ReSeFa maximises the generalised Rayleigh quotient

.. math:: \max_v \frac{v^T A v}{v^T B v}, \qquad
          A = \tfrac{1}{n_f} J_f^T J_f, \quad B = \tfrac{1}{n_b} J_b^T J_b + \tau\,\mathrm{tr}(\cdot)\,I,

whose maximisers are the leading eigenvectors of ``B^{-1} A`` (the generalised eigenproblem
``A v = lambda B v``), ``lambda`` the quotient.

Upstream (``zhujiapeng/resefa``, ``compute_direction.py``; Jacobians from
``compute_jacobian.py``), kept here:

* ``A`` and ``B`` are *means* over rows (``coef_f = 1 / Jaco_fore.shape[0]``), a row being one
  pixel of one channel; the mask is binary (``mask == 1`` inside);
* ``B`` is regularised only on request (``--full_rank``, off by default) as
  ``B + tau * trace(B) * I`` with ``tau = 1e-3``; otherwise ``B`` is inverted as it is. There
  is no null-space projection. Here ``tau=0.0`` is the default, as upstream's, and a ``B``
  that is not positive definite raises :class:`RankError` that suggests ``tau=1e-3``;
* upstream solves ``eig(inv(B) @ A)``, keeps the real parts and sorts by eigenvalue, largest
  first, per sample image. Here the same pencil is solved as a symmetric-definite problem
  (Cholesky ``B = L L^T``, ``eigh`` of ``L^{-1} A L^{-T}``, ``v = L^{-T} u``): the same
  eigenvalues and the same directions, normalised to unit rows and sign-fixed, without the
  complex round-off of a non-symmetric ``eig``;
* upstream computes one set of directions per sample (``per_sample=True`` here). By default
  the Gram matrices are averaged over the samples first (``A = mean_i A_i``, ``B = mean_i
  B_i``, i.e. ``sum_i J_{f,i}^T J_{f,i}`` up to a constant), which gives one set of directions
  that holds for all of them.

A soft mask ``m`` in ``[0, 1]`` generalises the split: ``A = sum_p m_p J_p^T J_p / sum_p m_p``
and ``B`` with ``1 - m``, over pixels ``p`` and channels; a binary mask gives upstream's.
Upstream differentiates the image resized to 256 px and summed over channels when it is
larger than 256 px; do that in ``image_fn`` to reproduce it.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError, FeatureError, RankError
from ._common import (
    HIGHEST, Directions, canonical_sign, check_count, check_float_array, check_k, is_concrete, top_k_eigh, unit_rows,
)


class RegionGrams(NamedTuple):
    """``inside`` (``A``) and ``outside`` (``B``): ``[D, D]`` means over rows of ``J^T J`` in
    and out of the region; ``[N, D, D]`` when computed per sample."""

    inside: jax.Array
    outside: jax.Array


def check_mask(mask, height: int, width: int) -> jax.Array:
    """The region as float weights ``[H, W]`` in ``[0, 1]``, with pixels both in and out."""
    shape = np.shape(mask)
    if shape != (height, width):
        raise ConfigError(
            f"the region mask must have the image's shape ({height}, {width}); got {shape}. "
            f"Resize it, e.g. jax.image.resize(mask, ({height}, {width}), 'nearest')"
        )
    m = jnp.asarray(mask)
    m = m.astype(jnp.float32) if (m.dtype == bool or not jnp.issubdtype(m.dtype, jnp.floating)) else m
    if is_concrete(m):
        if not bool(jnp.all(jnp.isfinite(m) & (m >= 0) & (m <= 1))):
            raise ConfigError("the region mask must hold values in [0, 1] (1 = inside the region)")
        inside = float(jnp.sum(m))
        if inside == 0:
            raise ConfigError("the region mask is empty (all zeros); mark the region with ones")
        if float(jnp.sum(1 - m)) == 0:
            raise ConfigError(
                "the region mask covers the whole image; ReSeFa needs pixels outside the region "
                "(for a global direction use sefa or ganspace)"
            )
    return m


def _as_nhwcd(jacobian, height: int, width: int) -> jax.Array:
    shape = np.shape(jacobian)
    if len(shape) == 3:
        N, P, D = shape
        if P % (height * width) != 0:
            raise FeatureError(
                f"the Jacobian's {P} rows do not fit a {height}x{width} mask: P must be H*W*C "
                "(pixels row-major, channels last, as image.reshape(-1)); pass [N, H, W, C, D] instead"
            )
        jac = jnp.reshape(jnp.asarray(jacobian), (N, height, width, P // (height * width), D))
        return check_float_array(jac, "jacobian", 5, "")
    if len(shape) == 5:
        if shape[1:3] != (height, width):
            raise ConfigError(
                f"the region mask is {height}x{width} but the Jacobian's images are {shape[1]}x{shape[2]}; "
                "give a mask of the image's size"
            )
        return check_float_array(jacobian, "jacobian", 5, "")
    raise FeatureError(
        f"jacobian must be [N, H, W, C, D] or [N, H*W*C, D] (image NHWC, latent last); got shape {shape}. "
        "Add a batch axis for one sample"
    )


def _sample_grams(j, m):
    """``(A_un, B_un)`` for one or several samples' ``j [..., H, W, C, D]``: un-normalised sums."""
    D = j.shape[-1]
    w = jnp.reshape(m, (1,) * (j.ndim - 4) + m.shape + (1, 1))
    jf = jnp.reshape(j, (-1, D))
    a = jnp.matmul(jnp.reshape(j * w, (-1, D)).T, jf, precision=HIGHEST)
    b = jnp.matmul(jnp.reshape(j * (1 - w), (-1, D)).T, jf, precision=HIGHEST)
    return a, b


def _row_counts(m, channels):
    return channels * jnp.sum(m), channels * jnp.sum(1 - m)


def region_grams(jacobian, mask, *, per_sample: bool = False) -> RegionGrams:
    """``A`` and ``B`` from Jacobians ``[N, H, W, C, D]`` (or ``[N, H*W*C, D]``) and a mask ``[H, W]``.

    ``per_sample=False``: means over all samples' rows (one ``[D, D]`` pair);
    ``True``: one pair per sample, ``[N, D, D]`` each (upstream's per-image directions).
    """
    if len(np.shape(mask)) != 2:
        raise ConfigError(f"the region mask must be a 2-D [H, W] array; got shape {np.shape(mask)}")
    H, W = np.shape(mask)
    j = _as_nhwcd(jacobian, H, W)
    m = check_mask(mask, H, W).astype(j.dtype)
    return _region_grams(j, m, per_sample)


@functools.partial(jax.jit, static_argnums=2)
def _region_grams(j, m, per_sample):
    nf, nb = _row_counts(m, j.shape[3])
    if per_sample:
        a, b = jax.vmap(_sample_grams, in_axes=(0, None))(j, m)
    else:
        a, b = _sample_grams(j, m)
        nf, nb = nf * j.shape[0], nb * j.shape[0]
    return RegionGrams(a / nf, b / nb)


def region_grams_from_fn(
    image_fn: Callable,
    latents,
    mask,
    *,
    chunk_size: int = 1,
    tangent_chunk: int | None = None,
    fn_args: Any = None,
    per_sample: bool = False,
) -> RegionGrams:
    """``A`` and ``B`` from a jittable ``image_fn(z [D]) -> [H, W, C]`` at each of ``latents [N, D]``.

    The Jacobian of each image is formed by forward mode (``jax.linearize`` once per sample,
    then its JVP on the basis vectors, ``tangent_chunk`` at a time, all ``D`` at once by
    default), cheaper than reverse mode as the image has far more entries than the latent.
    Samples go ``chunk_size`` at a time (vmapped) in one ``lax.scan``; only the ``D x D``
    sums are carried, so memory is about ``chunk_size`` Jacobians ``H*W*C*D`` plus the
    generator's activations times ``tangent_chunk``, whatever ``N`` is.

    Args:
      image_fn: ``image_fn(z)`` or, with ``fn_args`` (traced, e.g. the generator's
        parameters), ``image_fn(fn_args, z)``; one sample, no batch axis. Hashed as static.
      latents: ``[N, D]`` the points at which to differentiate (upstream: ``w`` of random
        samples, fed to every layer).
      mask: ``[H, W]`` region, 1 inside.
      per_sample: as in :func:`region_grams`.
    """
    z = check_float_array(latents, "latents", 2, "[N, latent_dim]")
    N, D = z.shape
    cs = min(check_count(chunk_size, "chunk_size", 1, "Use chunk_size=1 to hold one Jacobian at a time"), N)
    tc = D if tangent_chunk is None else min(
        check_count(tangent_chunk, "tangent_chunk", 1, "Use tangent_chunk=None for all directions at once"), D
    )
    if not callable(image_fn):
        raise ConfigError(f"image_fn must be a function z [D] -> image [H, W, C]; got {image_fn!r}")
    with_args = fn_args is not None
    call = (lambda args, x: image_fn(args, x)) if with_args else (lambda args, x: image_fn(x))
    spec = jax.eval_shape(call, fn_args, z[0])
    if len(spec.shape) != 3:
        raise FeatureError(
            f"image_fn must return one image [H, W, C] for one latent [D]; got shape {tuple(spec.shape)}. "
            "Vmapping is done here; do not add a batch axis"
        )
    m = check_mask(mask, spec.shape[0], spec.shape[1]).astype(jnp.promote_types(spec.dtype, jnp.float32))
    n_chunks = -(-N // cs)
    pad = n_chunks * cs - N
    zp = jnp.concatenate([z, jnp.broadcast_to(z[-1:], (pad, D))]) if pad else z  # real points, weight 0
    valid = jnp.arange(n_chunks * cs) < N
    a, b = _grams_from_fn(
        image_fn, with_args, cs, tc, per_sample, fn_args,
        zp.reshape(n_chunks, cs, D), valid.reshape(n_chunks, cs), m,
    )
    if per_sample:
        a, b = a[:N], b[:N]
    grams = RegionGrams(a, b)
    if is_concrete(grams) and not (bool(jnp.all(jnp.isfinite(a))) and bool(jnp.all(jnp.isfinite(b)))):
        raise FeatureError(
            "the Jacobian of image_fn has NaN/inf entries at these latents; check image_fn "
            "(non-differentiable ops, overflow) or drop those samples"
        )
    return grams


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _grams_from_fn(image_fn, with_args, cs, tc, per_sample, args, z_chunks, valid_chunks, m):
    call = (lambda x: image_fn(args, x)) if with_args else image_fn
    D = z_chunks.shape[-1]
    n_t = -(-D // tc)
    basis = jnp.concatenate([jnp.eye(D, dtype=z_chunks.dtype), jnp.zeros((n_t * tc - D, D), z_chunks.dtype)])
    basis = basis.reshape(n_t, tc, D)

    def jacobian(zi):  # [H, W, C, D]
        _, jvp = jax.linearize(call, zi)
        cols = jax.lax.map(jax.vmap(jvp), basis)  # [n_t, tc, H, W, C]
        cols = jnp.reshape(cols, (n_t * tc,) + cols.shape[2:])[:D]
        return jnp.moveaxis(cols, 0, -1).astype(m.dtype)

    def grams(zi):
        return _sample_grams(jacobian(zi), m)

    nf, nb = _row_counts(m, jax.eval_shape(call, z_chunks[0, 0]).shape[2])

    def step(carry, xs):
        zc, vc = xs
        a, b = jax.vmap(grams)(zc)
        keep = vc[:, None, None]
        a, b = jnp.where(keep, a, 0), jnp.where(keep, b, 0)
        if per_sample:
            return carry, (a / nf, b / nb)
        return (carry[0] + jnp.sum(a, axis=0), carry[1] + jnp.sum(b, axis=0)), None

    init = (jnp.zeros((D, D), m.dtype), jnp.zeros((D, D), m.dtype))
    (sa, sb), ys = jax.lax.scan(step, init, (z_chunks, valid_chunks))
    if per_sample:
        a, b = ys
        return jnp.reshape(a, (-1, D, D)), jnp.reshape(b, (-1, D, D))
    n = jnp.sum(valid_chunks).astype(m.dtype)
    return sa / (nf * n), sb / (nb * n)


def resefa_from_grams(grams: RegionGrams, k: int | None = None, *, tau: float = 0.0) -> Directions:
    """ReSeFa directions from ``A`` (``grams.inside``) and ``B`` (``grams.outside``).

    Solves ``A v = lambda (B + tau * trace(B) * I) v`` and returns the ``k`` largest
    ``lambda`` (``values``) with their unit ``v`` (``directions``), ``method='resefa'``.
    ``[N, D, D]`` Gram matrices give ``[N, k, D]`` directions and ``[N, k]`` values.
    ``tau=0`` as upstream's default; ``1e-3`` is upstream's ``--full_rank`` setting.
    """
    a = check_float_array(grams.inside, "grams.inside (A)", (2, 3), "[D, D] or [N, D, D]")
    b = check_float_array(grams.outside, "grams.outside (B)", (2, 3), "[D, D] or [N, D, D]")
    if a.shape != b.shape or a.shape[-1] != a.shape[-2]:
        raise FeatureError(f"A and B must be square and of one shape; got {a.shape} and {b.shape}")
    k = check_k(k, a.shape[-1])
    try:
        tau = float(tau)
    except (TypeError, ValueError):
        raise ConfigError(f"tau must be a non-negative float; got {tau!r}") from None
    if not tau >= 0:
        raise ConfigError(f"tau must be a non-negative float (upstream's --full_rank uses 1e-3); got {tau}")
    solve = functools.partial(_generalized_eigh, k=k, tau=tau)
    vals, vecs, definite = jax.vmap(solve)(a, b) if a.ndim == 3 else solve(a, b)
    if is_concrete(vals) and not (bool(jnp.all(jnp.isfinite(vals))) and bool(jnp.all(definite))):
        raise RankError(
            "B (the Jacobian outside the region) is singular or ill-conditioned, so the quotient "
            f"is unbounded (tau={tau:g}); pass tau=1e-3 (upstream's --full_rank), use more samples, "
            "or a smaller region"
        )
    return Directions(vecs, vals, "resefa")


@functools.partial(jax.jit, static_argnames=("k",))
def _generalized_eigh(a, b, *, k, tau):
    D = a.shape[-1]
    a = 0.5 * (a + a.T)
    b = 0.5 * (b + b.T) + tau * jnp.trace(b) * jnp.eye(D, dtype=b.dtype)
    lower = jnp.linalg.cholesky(b)
    # A singular B computed in float rounding may factor with a tiny positive pivot instead of
    # failing (a quotient of 1e8 then); a squared pivot below sqrt(eps) of the largest (a
    # condition number beyond about 3e3 in float32) counts as singular. tau=1e-3 keeps the
    # ratio above 1e-3.
    piv = jnp.diagonal(lower) ** 2
    definite = jnp.min(piv) > jnp.sqrt(jnp.finfo(b.dtype).eps) * jnp.max(piv)
    x = jax.scipy.linalg.solve_triangular(lower, a, lower=True)  # L^-1 A
    c = jax.scipy.linalg.solve_triangular(lower, x.T, lower=True)  # L^-1 A L^-T
    vals, u = top_k_eigh(c, k)
    v = jax.scipy.linalg.solve_triangular(lower.T, u.T, lower=False).T  # rows L^-T u
    # A B-orthogonal set, each row scaled to unit length; then signs fixed as everywhere.
    return vals, canonical_sign(unit_rows(v)), definite


def resefa(jacobian, mask, k: int | None = None, *, tau: float = 0.0, per_sample: bool = False) -> Directions:
    """ReSeFa directions from Jacobians ``[N, H, W, C, D]`` (or ``[N, H*W*C, D]``) and a region
    mask ``[H, W]``: :func:`region_grams` then :func:`resefa_from_grams`."""
    return resefa_from_grams(region_grams(jacobian, mask, per_sample=per_sample), k, tau=tau)
