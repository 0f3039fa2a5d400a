r"""Per-sample parts refinement (paper Eq. 6), vmapped over samples.

With the appearances ``A`` fixed, each sample's parts start from the global ``P`` and descend

.. math:: \tilde P_i = \arg\min_{\tilde P \ge 0} \| Z_i - A A^\top Z_i \tilde P \tilde P^\top \|_F^2

by projected gradient steps (the original's ``refine``). ``B_i = A^T Z_i`` stays fixed, so it is
computed once; a step then costs two products with ``B_i`` (``B P`` and ``B^T V``).
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

from . import checks
from .errors import ConfigError
from .factorize import AUTO_STEP, _GROW, armijo_ok, backtrack, flatten
from .factors import Factors, check_factors


def _grad(B, AtA, P, Y):
    """Gradient and loss (minus the constant) at ``P`` given ``Y = B P``: one pass over ``B``."""
    W = AtA @ Y
    PtP = P.T @ P
    YtW = Y.T @ W
    # (V^T B)^T rather than B^T V: the transposed product runs several times slower on the CPU.
    g = ((-4.0 * Y + 2.0 * W @ PtP).T @ B).T + 2.0 * P @ YtW
    f = -2.0 * jnp.sum(Y * Y) + jnp.sum(YtW * PtP)
    return g, f


class RefineState(NamedTuple):
    """One sample's refinement state: parts, ``Y = B P`` (carried) and the step in use."""

    P: jax.Array
    Y: jax.Array
    eta: jax.Array


def _refine_one(B, sqz, AtA, P0, eta0, steps, lr, auto):
    # ``Y = B P`` is carried, so each step reads ``B`` twice (``B^T V`` and the new ``B P``).
    def step_fixed(t, s: RefineState):
        g, _ = _grad(B, AtA, s.P, s.Y)
        P = jnp.maximum(s.P - lr * g, 0.0)
        return s._replace(P=P, Y=B @ P)

    def step_auto(t, s: RefineState):
        g, f = _grad(B, AtA, s.P, s.Y)

        def trial(eta):
            Pn = jnp.maximum(s.P - eta * g, 0.0)
            Yn = B @ Pn
            fn = -2.0 * jnp.sum(Yn * Yn) + jnp.sum((Yn.T @ (AtA @ Yn)) * (Pn.T @ Pn))
            return (Pn, Yn), armijo_ok(fn, f, g, Pn - s.P, eta, sqz)

        r = backtrack(trial, jnp.minimum(s.eta * _GROW, eta0))
        return RefineState(jnp.where(r.ok, r.out[0], s.P), jnp.where(r.ok, r.out[1], s.Y), r.eta)

    s0 = RefineState(P0, B @ P0, eta0)
    return jax.lax.fori_loop(0, steps, step_auto if auto else step_fixed, s0).P


@partial(jax.jit, static_argnames=("steps", "auto", "batch"))
def _refine(Zf, A, P, lr, *, steps, auto, batch=None):
    B = jnp.einsum("ck,nsc->nks", A, Zf)  # A^T Z_i, fixed
    AtA = A.T @ A
    sqz = jnp.sum(Zf * Zf, axis=(1, 2))
    # Step cap per sample: AUTO_STEP / ||B_i^T B_i||_2 (power iteration); backtracking below it.
    eta0 = AUTO_STEP / jnp.maximum(jax.vmap(_gram_norm)(B), 1e-30)
    one = partial(_refine_one, AtA=AtA, P0=P, steps=steps, lr=lr, auto=auto)
    return jax.lax.map(lambda a: one(a[0], a[1], eta0=a[2]), (B, sqz, eta0), batch_size=batch)


def _gram_norm(B, iters: int = 20):
    """``||B^T B||_2`` by power iteration (no ``S x S`` matrix)."""
    v = jnp.ones((B.shape[1],), B.dtype) / jnp.sqrt(B.shape[1])

    def body(_, v):
        w = B.T @ (B @ v)
        return w / jnp.maximum(jnp.linalg.norm(w), 1e-30)

    v = jax.lax.fori_loop(0, iters, body, v)
    return jnp.linalg.norm(B.T @ (B @ v))


def refine(features, factors: Factors, steps: int = 100, lr: float | str = "auto", batch: int | None = None):
    """Refined parts per sample, ``[N, S, R_S]`` (paper Eq. 6), starting from ``factors.parts``;
    one sample ``[H, W, C]`` gives ``[S, R_S]``. Composes with ``jit``, ``vmap`` and ``grad``.

    ``lr`` is ``"auto"`` (per-sample backtracking) or the original's fixed float step.
    ``batch``: samples refined at once (vmapped); the rest are mapped over in sequence. The
    default vmaps all samples on accelerators and takes one at a time on the CPU, where
    batched small products run slower than the same products one after another.
    """
    x = checks.features(features, single=True)
    single = x.ndim == 3
    x = x[None] if single else x
    check_factors(factors, x.shape)
    checks.require_finite((factors.appearance, factors.parts),
                          "the factors hold NaN/inf values; load or fit finite factors", error=ConfigError)
    steps = checks.steps(steps)
    lr_v = checks.lr(lr)
    A = jnp.asarray(factors.appearance, x.dtype)
    P = jnp.maximum(jnp.asarray(factors.parts, x.dtype), 0.0)
    if batch is None:
        batch = 1 if jax.default_backend() == "cpu" else x.shape[0]
    batch = checks.integer(batch, "batch")
    out = _refine(flatten(x), A, P, jnp.asarray(0.0 if lr_v is None else lr_v, x.dtype), steps=steps,
                  auto=lr_v is None, batch=min(batch, x.shape[0]))
    return out[0] if single else out


def refined_factors(factors: Factors, parts_i) -> Factors:
    """One sample's refined parts as :class:`Factors` (same appearances)."""
    if parts_i.ndim != 2 or parts_i.shape != factors.parts.shape:
        raise ConfigError(f"refined parts must have shape {factors.parts.shape}; got {parts_i.shape}")
    return Factors(factors.appearance, parts_i, factors.height, factors.width, factors.meta)
