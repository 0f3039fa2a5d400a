r"""GANSpace: PCA of latent or early-layer samples (Härkönen et al., NeurIPS 2020).

Upstream: ``harskish/ganspace``, ``decomposition.py`` (``compute``, ``linreg_lstsq``),
``estimators.py`` (the PCA estimators) and ``interactive.py`` (edits over a w+ layer range).

**Style generators** (StyleGAN, StyleGAN2, StyleGAN3): PCA of ``w = mapping(z)`` samples; the
components *are* latent directions (upstream ``samples_are_latents``). **Generators without
W** (DCGAN, PGGAN, BigGAN): PCA of flattened features of an early layer, then each feature
component is transferred to ``z`` by linear regression (:func:`latent_directions_by_regression`,
:func:`ganspace_regress`).

The PCA here streams: one jitted ``fori_loop`` draws ``batch_size`` vectors per step from
``sample_fn`` and merges the batch's mean and centred scatter into the running ones (Chan et
al.'s pairwise update, stable in float32 even when the mean is large), so memory is
``O(batch_size * D + D^2)`` whatever ``n_samples`` is. Then one ``eigh`` of the covariance.
This equals exact PCA of all samples (upstream's ``PCAEstimator``); upstream's default estimator,
scikit-learn's ``IncrementalPCA``, approximates the same decomposition. ``stdev`` follows
``IncrementalPCA.explained_variance_`` (``n - 1`` in the denominator), the estimator
upstream uses by default; ``explained_variance_ratio`` is ``ddof``-free.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError, FeatureError, LayerError, RankError
from ._common import (
    HIGHEST, Directions, check_count, check_float_array, check_k, is_concrete, top_k_eigh, unit_rows,
)


class Moments(NamedTuple):
    """Loop state of the streamed PCA: samples seen, their mean ``[D]`` and centred scatter
    ``sum_i (x_i - mean)(x_i - mean)^T`` ``[D, D]``."""

    count: jax.Array
    mean: jax.Array
    scatter: jax.Array


@dataclasses.dataclass(frozen=True)
class PCA:
    """GANSpace's PCA: ``components [k, D]`` (unit rows, largest variance first, sign-fixed as
    :class:`Directions`), ``stdev [k]`` along each, the sample ``mean [D]``, the share of total
    variance ``explained_variance_ratio [k]``, and ``n_samples`` (static)."""

    components: jax.Array
    stdev: jax.Array
    mean: jax.Array
    explained_variance_ratio: jax.Array
    n_samples: int = 0

    def as_directions(self) -> Directions:
        return Directions(self.components, self.stdev, "ganspace")


jax.tree_util.register_dataclass(
    PCA, data_fields=["components", "stdev", "mean", "explained_variance_ratio"], meta_fields=["n_samples"]
)


def _caller(sample_fn, with_args: bool):
    return (lambda args, key, n: sample_fn(args, key, n)) if with_args else (lambda args, key, n: sample_fn(key, n))


def _check_sample_shape(out, batch_size: int, what: str, name: str):
    shape = tuple(out.shape)
    if len(shape) != 2 or shape[0] != batch_size or shape[1] < 1:
        raise FeatureError(
            f"{what} must return {name} of shape [n, D] for n={batch_size}; got {shape}. "
            "Flatten feature maps with x.reshape(n, -1)"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise FeatureError(f"{what} must return floating-point {name}; got dtype {out.dtype}")


@functools.partial(jax.jit, static_argnames=("sample_fn", "with_args", "n_samples", "batch_size"))
def _stream_moments(sample_fn, with_args, n_samples, batch_size, args, key) -> Moments:
    call = _caller(sample_fn, with_args)
    spec = jax.eval_shape(lambda a, k: call(a, k, batch_size), args, key)
    dtype = jnp.promote_types(spec.dtype, jnp.float32)
    D = spec.shape[1]
    n_batches = -(-n_samples // batch_size)

    def body(i, m: Moments) -> Moments:
        x = call(args, jax.random.fold_in(key, i), batch_size).astype(dtype)
        valid = (i * batch_size + jnp.arange(batch_size)) < n_samples  # the last batch may be partial
        w = valid.astype(dtype)
        nb = jnp.sum(w)
        mb = jnp.matmul(w, jnp.where(valid[:, None], x, 0), precision=HIGHEST) / nb
        xc = jnp.where(valid[:, None], x - mb[None, :], 0)
        sb = jnp.matmul(xc.T, xc, precision=HIGHEST)
        tot = m.count + nb
        delta = mb - m.mean
        return Moments(
            count=tot,
            mean=m.mean + delta * (nb / tot),
            scatter=m.scatter + sb + jnp.outer(delta, delta) * (m.count * nb / tot),
        )

    init = Moments(jnp.zeros((), dtype), jnp.zeros((D,), dtype), jnp.zeros((D, D), dtype))
    return jax.lax.fori_loop(0, n_batches, body, init)


def _check_stream_args(sample_fn, n_samples, batch_size, sample_args, key, what="sample_fn"):
    if not callable(sample_fn):
        raise ConfigError(
            f"{what} must be a function (key, n) -> [n, D] or (args, key, n) -> [n, D]; got {sample_fn!r}"
        )
    n = check_count(n_samples, "n_samples", 2, "A covariance needs at least 2 samples; GANSpace uses about 1e6")
    bs = check_count(batch_size, "batch_size", 1, "Use e.g. batch_size=1024 (memory grows with it, not with n_samples)")
    if key is None:
        raise ConfigError("give a jax.random key, e.g. key=jax.random.key(0)")
    return n, min(bs, n), sample_args is not None


def stream_moments(
    sample_fn: Callable, n_samples: int, *, key, batch_size: int = 1024, sample_args: Any = None
) -> Moments:
    """Mean and centred scatter of ``n_samples`` vectors drawn from ``sample_fn`` in one jitted
    loop, ``batch_size`` at a time (``sample_fn(key, n)`` or ``sample_fn(sample_args, key, n)``
    returning ``[n, D]``; batch ``i`` uses ``jax.random.fold_in(key, i)``)."""
    n, bs, with_args = _check_stream_args(sample_fn, n_samples, batch_size, sample_args, key)
    spec = jax.eval_shape(lambda a, k: _caller(sample_fn, with_args)(a, k, bs), sample_args, key)
    _check_sample_shape(spec, bs, "sample_fn", "vectors")
    return _stream_moments(sample_fn, with_args, n, bs, sample_args, key)


def pca_from_moments(m: Moments, k: int | None = None) -> PCA:
    """:class:`PCA` from streamed :class:`Moments` (covariance ``scatter / (count - 1)``)."""
    D = int(m.mean.shape[-1])
    k = check_k(k, D, "sample dimension")
    count = float(m.count) if is_concrete(m.count) else None
    if count is not None and count < 2:
        raise ConfigError(f"PCA needs at least 2 samples; the moments hold {count:g}")
    if is_concrete(m.scatter) and not bool(jnp.all(jnp.isfinite(m.scatter))):
        raise FeatureError(
            "the sample covariance has NaN/inf entries: sample_fn produced non-finite vectors "
            "(or values too large for float32); check the generator and the layer"
        )
    comps, std, ratio = _pca(m.scatter, m.count, k)
    return PCA(comps, std, m.mean, ratio, int(count) if count is not None else 0)


@functools.partial(jax.jit, static_argnums=2)
def _pca(scatter, count, k):
    cov = scatter / (count - 1)
    vals, vecs = top_k_eigh(cov, k)
    vals = jnp.maximum(vals, 0)
    total = jnp.trace(cov)
    return vecs, jnp.sqrt(vals), vals / jnp.where(total > 0, total, 1)


def ganspace(
    sample_fn: Callable,
    n_samples: int,
    k: int | None = None,
    *,
    key,
    batch_size: int = 1024,
    sample_args: Any = None,
) -> PCA:
    """GANSpace PCA of ``n_samples`` vectors from ``sample_fn``, streamed.

    Args:
      sample_fn: ``sample_fn(key, n) -> [n, D]`` or, with ``sample_args``,
        ``sample_fn(sample_args, key, n)`` (pass the generator's parameters there so they are
        traced, not baked into the program). For StyleGAN-like generators the ``w`` vectors;
        otherwise the flattened features of an early layer (then regress to ``z`` with
        :func:`ganspace_regress`). Must be jittable; it is hashed as a static argument.
      n_samples: at least 2 (upstream uses 1e6 for its published components).
      k: components to keep (``None``: all ``D``).
      key: a ``jax.random`` key; batch ``i`` draws with ``fold_in(key, i)``, so the result
        depends on ``batch_size`` too.
      batch_size: vectors per loop step; memory is ``O(batch_size * D + D^2)``.

    Returns:
      :class:`PCA` (``.as_directions()`` gives :class:`Directions` with ``values = stdev``).
    """
    return pca_from_moments(
        stream_moments(sample_fn, n_samples, key=key, batch_size=batch_size, sample_args=sample_args), k
    )


# ---------------------------------------------------------------------------------------------
# Transfer to z by regression (generators without a W space)


def latent_directions_by_regression(z, coords, stdev=None) -> jax.Array:
    r"""GANSpace's regression of latents on PCA coordinates (upstream ``linreg_lstsq``).

    Upstream collects latents ``Z [N, D_z]`` and the PCA coordinates of their features,
    ``A = ((f - mean) @ components.T) / stdev`` ``[N, k]``, solves the least-squares problem
    ``min_M ||A M - Z||`` without an intercept (``scipy.linalg.lstsq(A, Z)``) and normalises
    the rows of ``M [k, D_z]``: row ``j`` is the latent direction of feature component ``j``.

    Args:
      z: ``[N, D_z]`` latents (flattened).
      coords: ``[N, k]`` coordinates of the features of the same samples on the components.
      stdev: optional ``[k]``; coordinates are divided by it first, as upstream does (this only
        rescales rows of ``M``, so the unit directions are the same; it conditions the solve).

    Returns:
      ``[k, D_z]`` unit rows (signs follow the components; not sign-fixed).
    """
    z = check_float_array(z, "z", 2, "[N, latent_dim]")
    a = check_float_array(coords, "coords", 2, "[N, k] (PCA coordinates)")
    if a.shape[0] != z.shape[0]:
        raise FeatureError(f"z and coords must hold the same samples; got {z.shape[0]} and {a.shape[0]} rows")
    if a.shape[0] < a.shape[1]:
        raise RankError(
            f"{a.shape[0]} samples cannot determine {a.shape[1]} directions; use at least k samples "
            "(upstream uses max(10000, n))"
        )
    if stdev is not None:
        s = _check_stdev(stdev, a.shape[1])
        a = a / s[None, :]
    m = jnp.linalg.lstsq(a, z)[0]
    return unit_rows(m)


def _check_stdev(stdev, k):
    s = check_float_array(stdev, "stdev", 1, "[k]")
    if s.shape[0] != k:
        raise FeatureError(f"stdev must have one entry per component ({k}); got shape {s.shape}")
    if is_concrete(s) and not bool(jnp.all(s > 0)):
        raise RankError(
            f"components {np.flatnonzero(np.asarray(s) <= 0).tolist()} have zero variance; use a smaller k"
        )
    return s


@functools.partial(jax.jit, static_argnames=("pair_fn", "with_args", "n_samples", "batch_size"))
def _stream_normal_equations(pair_fn, with_args, n_samples, batch_size, args, key, comps, mean, stdev):
    call = _caller(pair_fn, with_args)
    zs, _ = jax.eval_shape(lambda a, k: call(a, k, batch_size), args, key)
    dtype = jnp.promote_types(comps.dtype, jnp.float32)
    k, dz = comps.shape[0], zs.shape[1]
    n_batches = -(-n_samples // batch_size)

    def body(i, carry):
        g, h = carry
        z, f = call(args, jax.random.fold_in(key, i), batch_size)
        valid = ((i * batch_size + jnp.arange(batch_size)) < n_samples)[:, None]
        a = jnp.matmul(f.astype(dtype) - mean[None, :], comps.T, precision=HIGHEST) / stdev[None, :]
        a = jnp.where(valid, a, 0)
        z = jnp.where(valid, z.astype(dtype), 0)
        return g + jnp.matmul(a.T, a, precision=HIGHEST), h + jnp.matmul(a.T, z, precision=HIGHEST)

    init = (jnp.zeros((k, k), dtype), jnp.zeros((k, dz), dtype))
    return jax.lax.fori_loop(0, n_batches, body, init)


def ganspace_regress(
    pair_fn: Callable,
    pca: PCA,
    n_samples: int = 10_000,
    *,
    key,
    batch_size: int = 1024,
    sample_args: Any = None,
) -> jax.Array:
    """Feature-space :class:`PCA` components transferred to ``z``, streamed.

    The same least squares as :func:`latent_directions_by_regression` (upstream
    ``linreg_lstsq``), solved through its normal equations ``(A^T A) M = A^T Z`` accumulated in
    one jitted loop, so nothing of size ``n_samples`` is held. ``A`` is scaled by ``stdev``, so
    ``A^T A`` is about ``n I`` and well conditioned. Upstream uses ``max(10_000, n_pca)`` samples.

    Args:
      pair_fn: ``pair_fn(key, n) -> (z [n, D_z], features [n, F])`` (or
        ``pair_fn(sample_args, key, n)``), the features flattened as for the PCA.
      pca: the feature-space :class:`PCA` (``components [k, F]``).

    Returns:
      ``[k, D_z]`` unit rows, the latent direction of each component.
    """
    n, bs, with_args = _check_stream_args(pair_fn, n_samples, batch_size, sample_args, key, "pair_fn")
    comps = jnp.asarray(pca.components)
    k, F = comps.shape
    if n < k:
        raise RankError(f"n_samples = {n} cannot determine {k} directions; use n_samples >= {k} (upstream: 10000)")
    stdev = _check_stdev(pca.stdev, k)
    out = jax.eval_shape(lambda a, k: _caller(pair_fn, with_args)(a, k, bs), sample_args, key)
    if not (isinstance(out, (tuple, list)) and len(out) == 2):
        raise FeatureError("pair_fn must return a pair (z [n, latent_dim], features [n, F])")
    _check_sample_shape(out[0], bs, "pair_fn", "latents")
    _check_sample_shape(out[1], bs, "pair_fn", "features")
    if out[1].shape[1] != F:
        raise FeatureError(f"pair_fn's features have {out[1].shape[1]} entries; the PCA components have {F}")
    g, h = _stream_normal_equations(pair_fn, with_args, n, bs, sample_args, key, comps, jnp.asarray(pca.mean), stdev)
    m = jnp.linalg.solve(g, h)
    if is_concrete(m) and not bool(jnp.all(jnp.isfinite(m))):
        raise FeatureError(
            "the regression produced NaN/inf: pair_fn gave non-finite values, or the PCA "
            "coordinates are linearly dependent (use a smaller k or more samples)"
        )
    return unit_rows(m)


# ---------------------------------------------------------------------------------------------
# Edits


def edit_wplus(wp, direction, alpha, layers: tuple[int, int] | None = None) -> jax.Array:
    """Move w+ codes along a direction on a range of layers: ``wp[:, start:end] += alpha * d``.

    GANSpace's interactive edit (``interactive.py``: ``z_deltas[l] += comp * stdev * sigma``
    for ``l`` in ``range(start, end)``, the end exclusive as upstream saves it) and SeFa's
    (``sefa.py``: ``code[:, layers] += boundary * d``). For GANSpace's sliders pass
    ``alpha = sigma * pca.stdev[j]``.

    Args:
      wp: ``[N, L, D]`` w+ codes.
      direction: ``[D]``.
      alpha: a scalar or ``[N]`` (one strength per sample).
      layers: ``(start, end)`` with ``0 <= start < end <= L``, end exclusive; ``None``: all.

    Composes with ``jit`` (``layers`` static), ``vmap`` and ``grad``.
    """
    wp = jnp.asarray(wp)
    if wp.ndim != 3:
        raise FeatureError(f"wp must be [N, L, D] w+ codes; got shape {wp.shape}. Add a batch axis for one sample")
    N, L, D = wp.shape
    d = jnp.asarray(direction)
    if d.shape != (D,):
        raise FeatureError(f"direction must have shape ({D},) to match wp {wp.shape}; got {d.shape}")
    a = jnp.asarray(alpha, wp.dtype)
    if a.shape not in ((), (N,)):
        raise ConfigError(f"alpha must be a scalar or one value per sample, shape ({N},); got shape {a.shape}")
    if layers is None:
        start, end = 0, L
    else:
        try:
            start, end = (int(v) for v in layers)
        except (TypeError, ValueError):
            raise LayerError(f"layers must be a pair (start, end) of ints, end exclusive; got {layers!r}") from None
        if not 0 <= start < end <= L:
            raise LayerError(
                f"layers {(start, end)} do not fit the {L} w+ rows; use 0 <= start < end <= {L} (end exclusive)"
            )
    rows = (jnp.arange(L) >= start) & (jnp.arange(L) < end)
    delta = jnp.reshape(a, (-1, 1, 1)) * d[None, None, :].astype(wp.dtype)
    return wp + jnp.where(rows[None, :, None], delta, jnp.zeros((), wp.dtype))
