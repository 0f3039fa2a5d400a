"""Operation and byte counts of one step, and log-log slopes of measured times.

The counts are of float multiply-adds counted as 2 flops, for the products each engine
actually forms. ``S = H * W``; ``N`` samples; ranks ``R_C``, ``R_S``; float32 features.
"""

from __future__ import annotations

import math

import numpy as np

F32 = 4


def fit_step_flops(N: int, S: int, C: int, rc: int, rs: int) -> int:
    """One fixed-step iteration of Algorithm 1 with panda-jax's association
    (:func:`panda_jax.factorize._step_fixed`).

    The two passes over the features (``Z^T V`` for the parts gradient, ``Z P`` for the new
    parts) cost ``4 N S C R_S``; the rest works on ``[C or R_C, N R_S]`` blocks and ``[C, R_C]``
    arrays. ``W = A^T A Y`` comes from the formed Gram ``A^T A`` when ``R_C <= N R_S`` and
    from ``A^T (A Y)`` otherwise (``panda_jax.factorize._gram``)."""
    NR = N * rs
    big = 2 * (2 * N * S * C * rs)  # Z^T V and Z P
    block = 2 * C * rc * NR  # one [C, R_C] x [R_C, N R_S] product (or a transposed one)
    # Y = A^T X before and after the parts step, V = A U, X U^T in grad A
    products = 4 * block
    if rc <= NR:
        # A^T A; W = (A^T A) Y twice; the second term of grad A as A (Y (Y P^T P)^T)
        products += 2 * C * rc * rc + 2 * (2 * rc * rc * NR) + 2 * rc * NR * rc + 2 * C * rc * rc
    else:
        products += 4 * block + block  # A Y and A^T (A Y) before and after the parts step; (A Y) (Y P^T P)^T
    small = (
        2 * rc * NR * rs  # sum_n Y_n^T W_n
        + 2 * (2 * rc * NR * rs)  # W P^T P (U), for each gradient
        + 2 * rc * NR * rs  # Y P^T P
        + 3 * 2 * S * rs * rs  # P^T P twice, P (Y^T W)
    )
    return big + products + small


def fit_step_feature_bytes(N: int, S: int, C: int) -> int:
    """Feature bytes one iteration reads: two passes over ``[N, S, C]`` float32."""
    return 2 * N * S * C * F32


def _chain(*dims) -> int:
    """Flops of a matrix chain ``d0 x d1 @ d1 x d2 @ ...`` evaluated left to right."""
    return sum(2 * dims[0] * k * cols for k, cols in zip(dims[1:-1], dims[2:]))


def _reference_parts_grad(N, S, C, rc, rs):
    # zt Uc Uc^T z Us | Us Us^T zt Uc Uc^T Uc Uc^T z Us | zt Uc Uc^T Uc Uc^T z Us Us^T Us
    # (Us Us^T is formed once and broadcast over the samples)
    return (
        N * _chain(S, C, rc, C, S, rs)
        + N * _chain(S, rs, S, C, rc, C, rc, C, S, rs) - (N - 1) * 2 * S * rs * S
        + N * _chain(S, C, rc, C, rc, C, S, rs, S, rs)
    )


def reference_step_flops(N: int, S: int, C: int, rc: int, rs: int) -> int:
    """One iteration of ``torch_reference.decompose``: the original's products evaluated left to
    right, so per sample ``S x S`` (parts gradient) and ``C x C`` (appearance gradient)
    matrices are formed."""
    # z Us Us^T zt Uc | Uc Uc^T z Us Us^T Us Us^T zt Uc | z Us Us^T Us Us^T zt Uc Uc^T Uc
    appearance = (
        N * _chain(C, S, rs, S, C, rc)
        + N * _chain(C, rc, C, S, rs, S, rs, S, C, rc) - (N - 1) * 2 * C * rc * C
        + N * _chain(C, S, rs, S, rs, S, C, rc, C, rc)
    )
    return _reference_parts_grad(N, S, C, rc, rs) + appearance


def refine_step_flops(S: int, rc: int, rs: int) -> int:
    """One fixed refinement step of one sample with ``B = A^T Z`` precomputed
    (``panda_jax.refine``): ``B P`` and ``B^T V`` plus ``R x R`` terms."""
    return 2 * (2 * rc * S * rs) + 2 * rc * rc * rs + 2 * 2 * rc * rs * rs + 2 * 2 * S * rs * rs


def reference_refine_step_flops(S: int, C: int, rc: int, rs: int) -> int:
    """One step of ``torch_reference.refine`` for one sample (the parts gradient above)."""
    return _reference_parts_grad(1, S, C, rc, rs)


def reference_intermediate_bytes(N: int, S: int, C: int) -> int:
    """The largest array the original order forms: ``[N, max(S, C), max(S, C)]`` float32."""
    m = max(S, C)
    return N * m * m * F32


def loglog_slope(xs, ys) -> float | None:
    """Least-squares slope of ``log y`` against ``log x`` (``None`` with fewer than two points)."""
    pts = [(x, y) for x, y in zip(xs, ys) if x and y and x > 0 and y > 0 and math.isfinite(y)]
    if len(pts) < 2:
        return None
    lx, ly = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(lx, ly, 1)[0])
