r"""Per-sample parts refinement (paper Eq. 6), vmapped over samples.

With the appearances ``A`` fixed, each sample's parts start from the global ``P`` and descend

.. math:: \tilde P_i = \arg\min_{\tilde P \ge 0} \| Z_i - A A^\top Z_i \tilde P \tilde P^\top \|_F^2

by projected gradient steps (the original's ``refine``). ``B_i = A^T Z_i`` stays fixed, so it is
computed once; a step then costs two products with ``B_i`` (``B P`` and ``B^T V``).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from .errors import ConfigError
from .factorize import _armijo_ok, _check_lr, _check_steps, _GROW, _SHRINK, _TRIALS, check_features, flatten
from .factors import Factors, check_factors


def _grad(B, AtA, P):
    Y = B @ P  # [R_C, R_S]
    W = AtA @ Y
    PtP = P.T @ P
    YtW = Y.T @ W
    g = B.T @ (-4.0 * Y + 2.0 * W @ PtP) + 2.0 * P @ YtW
    f = -2.0 * jnp.sum(Y * Y) + jnp.sum(YtW * PtP)
    return g, f


def _f(B, AtA, P):
    Y = B @ P
    return -2.0 * jnp.sum(Y * Y) + jnp.sum((Y.T @ (AtA @ Y)) * (P.T @ P))


def _refine_one(B, sqz, AtA, P0, eta0, steps, lr, auto):
    def step_fixed(t, P):
        g, _ = _grad(B, AtA, P)
        return jnp.maximum(P - lr * g, 0.0)

    def step_auto(t, carry):
        P, eta = carry
        g, f = _grad(B, AtA, P)

        def trial(eta):
            Pn = jnp.maximum(P - eta * g, 0.0)
            fn = _f(B, AtA, Pn)
            return Pn, _armijo_ok(fn, f, g, Pn - P, eta, sqz)

        def cond(c):
            return (~c[2]) & (c[3] < _TRIALS)

        def body(c):
            e = c[0] * _SHRINK
            Pn, ok = trial(e)
            return e, Pn, ok, c[3] + 1

        e = eta * _GROW
        Pn, ok = trial(e)
        e, Pn, ok, _ = jax.lax.while_loop(cond, body, (e, Pn, ok, 1))
        return jnp.where(ok, Pn, P), e

    if auto:
        P, _ = jax.lax.fori_loop(0, steps, step_auto, (P0, eta0))
        return P
    return jax.lax.fori_loop(0, steps, step_fixed, P0)


@partial(jax.jit, static_argnames=("steps", "auto"))
def _refine(Zf, A, P, lr, *, steps, auto):
    B = jnp.einsum("ck,nsc->nks", A, Zf)  # A^T Z_i, fixed
    AtA = A.T @ A
    sqz = jnp.sum(Zf * Zf, axis=(1, 2))
    # Conservative first step from each sample's scale; backtracking adapts it.
    eta0 = 1.0 / (8.0 * jnp.sum(B * B, axis=(1, 2)) * (1.0 + jnp.trace(AtA) / A.shape[1]) + 1e-30)
    one = partial(_refine_one, AtA=AtA, P0=P, steps=steps, lr=lr, auto=auto)
    return jax.vmap(lambda b, s, e: one(b, s, eta0=e))(B, sqz, eta0)


def refine(features, factors: Factors, steps: int = 100, lr: float | str = "auto"):
    """Refined parts per sample, ``[N, S, R_S]`` (paper Eq. 6), starting from ``factors.parts``.

    ``lr`` is ``"auto"`` (per-sample backtracking) or the original's fixed float step.
    """
    x = check_features(features)
    check_factors(factors, x.shape)
    steps = _check_steps(steps)
    lr_v = _check_lr(lr)
    A = jnp.asarray(factors.appearance, x.dtype)
    P = jnp.maximum(jnp.asarray(factors.parts, x.dtype), 0.0)
    return _refine(flatten(x), A, P, jnp.asarray(lr_v or 0.0, x.dtype), steps=steps, auto=lr_v is None)


def refined_factors(factors: Factors, parts_i) -> Factors:
    """One sample's refined parts as :class:`Factors` (same appearances)."""
    if parts_i.ndim != 2 or parts_i.shape != factors.parts.shape:
        raise ConfigError(f"refined parts must have shape {factors.parts.shape}; got {parts_i.shape}")
    return Factors(factors.appearance, parts_i, factors.height, factors.width, factors.meta)
