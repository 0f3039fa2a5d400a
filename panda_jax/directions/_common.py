"""What the baselines share: the :class:`Directions` result and the argument checks."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ..errors import ConfigError, FeatureError, RankError

HIGHEST = jax.lax.Precision.HIGHEST


@dataclasses.dataclass(frozen=True)
class Directions:
    """Latent directions found by a baseline, strongest first.

    ``directions`` ``[k, D]``: unit rows, each with its largest-magnitude entry positive (an
    eigenvector's sign is arbitrary; this fixes one). ``values`` ``[k]``: the score each method
    sorts by (SeFa: eigenvalues of ``W^T W``; GANSpace: standard deviations along the
    components; ReSeFa: the generalised Rayleigh quotients). ``method`` names the method. A
    pytree (``method`` is static), so it passes through ``jit`` and ``vmap``; per-sample results
    carry a leading sample axis on both arrays.
    """

    directions: jax.Array
    values: jax.Array
    method: str = ""

    def __len__(self) -> int:
        return int(np.shape(self.values)[-1])


jax.tree_util.register_dataclass(Directions, data_fields=["directions", "values"], meta_fields=["method"])


def is_concrete(*xs) -> bool:
    """True when no argument is a tracer: value checks run only then, never inside a trace."""
    return not any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves(xs))


def check_k(k, D: int, what: str = "latent dimension") -> int:
    """``k`` as an int in ``1..D``; ``None`` means all ``D``."""
    if k is None:
        return D
    try:
        k_int = int(k)
    except (TypeError, ValueError):
        raise RankError(f"k must be a positive integer or None; got {k!r}") from None
    if k_int != k or k_int < 1:
        raise RankError(f"k must be a positive integer or None; got {k!r}")
    if k_int > D:
        raise RankError(f"k = {k_int} is larger than the {what} {D}; use k <= {D} (or k=None for all)")
    return k_int


def check_count(value, name: str, minimum: int, fix: str) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}") from None
    if v != value or v < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}; got {value!r}. {fix}")
    return v


def check_float_array(x, name: str, ndim: int | tuple[int, ...], layout: str) -> jax.Array:
    """``x`` as a floating JAX array of the given rank; finiteness is checked when concrete."""
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    shape = np.shape(x)
    if len(shape) not in ndims:
        raise FeatureError(f"{name} must be a {' or '.join(f'{d}-D' for d in ndims)} array {layout}; got shape {shape}")
    if 0 in shape:
        raise FeatureError(f"{name} has an empty axis: shape {shape}")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        x = x.astype(jnp.float32)
    if is_concrete(x):
        bad = int(x.size - int(jnp.sum(jnp.isfinite(x))))
        if bad:
            raise FeatureError(f"{name} contains {bad} NaN/inf values; check what produced it")
    return x


def canonical_sign(v: jax.Array) -> jax.Array:
    """Flip each row of ``v [..., k, D]`` so that its largest-magnitude entry is positive."""
    idx = jnp.argmax(jnp.abs(v), axis=-1, keepdims=True)
    s = jnp.sign(jnp.take_along_axis(v, idx, axis=-1))
    return v * jnp.where(s == 0, 1.0, s).astype(v.dtype)


def unit_rows(v: jax.Array) -> jax.Array:
    n = jnp.linalg.norm(v, axis=-1, keepdims=True)
    return v / jnp.where(n > 0, n, 1.0)


SUBSPACE_MIN_DIM = 2048  # above this, and for k << D, subspace iteration instead of a full eigh


def top_k_eigh(m: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    """The ``k`` largest eigenpairs of a symmetric ``[..., D, D]``: values ``[..., k]`` and unit,
    sign-fixed eigenvectors as rows ``[..., k, D]``, largest first.

    A full ``eigh`` up to ``D = 2048``; for larger ``D`` with ``k <= D / 8`` (e.g. GANSpace on
    8192 flattened features) block subspace iteration with ``k + 16`` vectors and a Rayleigh-Ritz
    step, ``O(D^2 k)`` per iteration instead of the ``O(D^3)`` of a full decomposition."""
    m = 0.5 * (m + jnp.swapaxes(m, -1, -2))
    D = m.shape[-1]
    if m.ndim == 2 and D > SUBSPACE_MIN_DIM and k <= D // 8:
        return _top_k_subspace(m, k)
    vals, vecs = jnp.linalg.eigh(m)
    vals = jnp.flip(vals, axis=-1)[..., :k]
    vecs = jnp.flip(jnp.swapaxes(vecs, -1, -2), axis=-2)[..., :k, :]
    return vals, canonical_sign(vecs)


def _top_k_subspace(m, k: int, iters: int = 60, extra: int = 16):
    D = m.shape[-1]
    q = jax.random.normal(jax.random.key(0), (D, k + extra), m.dtype)
    q, _ = jnp.linalg.qr(q)

    def body(_, q):
        return jnp.linalg.qr(m @ q)[0]

    q = jax.lax.fori_loop(0, iters, body, q)
    small = q.T @ m @ q
    vals, vecs = jnp.linalg.eigh(0.5 * (small + small.T))
    vals = jnp.flip(vals)[:k]
    vecs = (q @ jnp.flip(vecs, axis=-1)[:, :k]).T
    return vals, canonical_sign(vecs)
