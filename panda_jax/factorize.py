r"""Semi-nonnegative factorization of feature maps (PandA, paper Eq. 3 and Algorithm 1).

Given feature maps :math:`Z_i \in \mathbb{R}^{C \times S}` (``features[i]`` of shape
``[H, W, C]`` read with ``s = h * W + w``), find appearances :math:`A \in \mathbb{R}^{C \times R_C}`
and non-negative parts :math:`P \in \mathbb{R}_{\ge 0}^{S \times R_S}` minimising

.. math:: \mathcal{L}(A, P) = \sum_i \| Z_i - A A^\top Z_i P P^\top \|_F^2 .

Each step is a projected gradient step on the parts, then a gradient step on the appearances
(Algorithm 1). The gradients are the original's, evaluated with the cheapest association of
the products: with :math:`X_i = Z_i P`, :math:`Y_i = A^\top X_i`, :math:`W_i = A^\top A Y_i`,

.. math::
   \nabla_P = \sum_i Z_i^\top A (-4 Y_i + 2 W_i P^\top P) + 2 P \sum_i Y_i^\top W_i ,
   \qquad
   \nabla_A = -4 \sum_i X_i X_i^\top A + 2 A A^\top M + 2 M A^\top A ,\;
   M = \sum_i X_i P^\top P X_i^\top A

and :math:`\mathcal{L}_i = \|Z_i\|^2 - 2\|Y_i\|^2 + \operatorname{tr}(P^\top P\, Y_i^\top W_i)`.
No per-sample ``S x S`` or ``C x C`` matrix is formed; a step reads the features twice
(``Z^T V`` for the parts gradient, ``Z P`` for the new parts).

``lr`` as a float is exactly the original's step on the gradient of the *summed* loss. The
default ``lr="auto"`` chooses each block's step by backtracking on the quadratic upper bound
(the projected-gradient Armijo rule), so the same call works at any layer and feature scale.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .errors import ConfigError, DivergenceError, FeatureError, RankError
from .factors import Factors, check_factors

# ---------------------------------------------------------------------------------------------
# Input checks


def check_features(features, name: str = "features") -> jax.Array:
    """``features`` as a float array ``[N, H, W, C]``; raises :class:`FeatureError` otherwise."""
    shape = np.shape(features)
    if len(shape) != 4:
        raise FeatureError(
            f"{name} must be a 4-D array [N, H, W, C] (NHWC feature maps); got shape {shape}. "
            "Add a batch axis for one sample, or transpose NCHW maps with .transpose(0, 2, 3, 1)"
        )
    if min(shape) < 1:
        raise FeatureError(f"{name} has an empty axis: shape {shape}")
    x = jnp.asarray(features)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise FeatureError(f"{name} must be floating point; got dtype {x.dtype}")
    if x.dtype != jnp.float32 and x.dtype != jnp.float64:
        x = x.astype(jnp.float32)
    bad = int(jnp.size(x) - jnp.sum(jnp.isfinite(x)))
    if bad:
        raise FeatureError(
            f"{name} contain {bad} NaN/inf values; check the generator output at this layer "
            "(or drop the samples with jnp.isfinite(features).all(axis=(1, 2, 3)))"
        )
    return x


def check_ranks(ranks, C: int, S: int) -> tuple[int, int]:
    try:
        rc, rs = (int(r) for r in ranks)
    except (TypeError, ValueError):
        raise RankError(f"ranks must be a pair (R_C, R_S) of positive integers; got {ranks!r}") from None
    if rc < 1 or rs < 1:
        raise RankError(f"ranks must be positive; got (R_C, R_S) = ({rc}, {rs})")
    if rc > C:
        raise RankError(f"R_C = {rc} is larger than the {C} channels of the features; use R_C <= {C}")
    if rs > S:
        raise RankError(f"R_S = {rs} is larger than the {S} spatial positions of the features; use R_S <= {S}")
    return rc, rs


def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ConfigError(f"steps must be a positive integer; got {steps!r}")
    return int(steps)


def _check_lr(lr):
    if isinstance(lr, str):
        if lr != "auto":
            raise ConfigError(f"lr must be 'auto' or a positive float; got {lr!r}")
        return None
    try:
        v = float(lr)
    except (TypeError, ValueError):
        raise ConfigError(f"lr must be 'auto' or a positive float; got {lr!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise ConfigError(f"lr must be a positive finite float; got {lr!r}")
    return v


def flatten(features) -> jax.Array:
    """``[N, H, W, C]`` -> ``[N, S, C]`` with ``s = h * W + w``."""
    N, H, W, C = features.shape
    return features.reshape(N, H * W, C)


# ---------------------------------------------------------------------------------------------
# The loss and its gradients (summed over samples)


def naive_loss(features, A, P):
    """The loss exactly as written, :math:`\\sum_i \\|Z_i - A A^T Z_i P P^T\\|^2` (for tests)."""
    Z = jnp.swapaxes(flatten(features), 1, 2)  # [N, C, S]
    rec = A @ (A.T @ Z @ P) @ P.T
    return jnp.sum((Z - rec) ** 2)


# Layout inside the loops. The features are read as one matrix ``Zt = [S, N*C]`` (column
# ``n*C + c``), so both passes are single matrix products: ``X = P^T Zt`` and ``Zt V``.
# Small per-sample quantities are kept as matrices with columns ``n*R + r``:
# ``Xm = [C, N*R]`` (``X_n = Z_n P``), ``Y = [R_C, N*R]`` (``Y_n = A^T X_n``).


def to_columns(Zf):
    """``[N, S, C]`` -> ``Zt = [S, N*C]``."""
    N, S, C = Zf.shape
    return jnp.transpose(Zf, (1, 0, 2)).reshape(S, N * C)


def _parts_pass(Zt, P, C):
    """``Xm = [C, N*R]`` with blocks ``X_n = Z_n P``: one read of the features."""
    S, NC = Zt.shape
    N, R = NC // C, P.shape[1]
    Xr = (P.T @ Zt).reshape(R, N, C)
    return jnp.transpose(Xr, (2, 1, 0)).reshape(C, N * R)


def _per_sample(M, Q, R):
    """Each ``[K, R]`` block of ``M = [K, N*R]`` times ``Q = [R, R]``."""
    K, NR = M.shape
    return (M.reshape(K, NR // R, R) @ Q).reshape(K, NR)


def _blocks_gram(Y, W, R):
    """``sum_n Y_n^T W_n`` (``[R, R]``) for ``[K, N*R]`` matrices."""
    K, NR = Y.shape
    return jnp.einsum("knr,knq->rq", Y.reshape(K, NR // R, R), W.reshape(K, NR // R, R))


def _f_from_Y(Y, AtA, PtP):
    """The loss minus ``sum ||Z_i||^2``, and ``W = A^T A Y`` and ``sum_n Y_n^T W_n``."""
    R = PtP.shape[0]
    W = AtA @ Y
    YtW = _blocks_gram(Y, W, R)
    return -2.0 * jnp.sum(Y * Y) + jnp.sum(YtW * PtP), W, YtW


def _grad_parts(Zt, A, P, Y, AtA, PtP):
    """:math:`\nabla_P` and the loss terms given ``Y``: one read of the features (``Zt V``)."""
    S, NC = Zt.shape
    C, R = A.shape[0], P.shape[1]
    N = NC // C
    f, W, YtW = _f_from_Y(Y, AtA, PtP)
    V = A @ (-4.0 * Y + 2.0 * _per_sample(W, PtP, R))  # [C, N*R]
    Vf = jnp.transpose(V.reshape(C, N, R), (1, 0, 2)).reshape(N * C, R)
    return Zt @ Vf + 2.0 * P @ YtW, f


def _grad_appearance(Xm, A, Y, AtA, PtP):
    """:math:`\nabla_A` given ``Xm`` (``X_n = Z_n P``) and ``Y = A^T Xm``; no feature reads."""
    R = PtP.shape[0]
    W = AtA @ Y
    Xp, Yp = _per_sample(Xm, PtP, R), _per_sample(Y, PtP, R)
    return -4.0 * Xm @ Y.T + 2.0 * (A @ Y) @ Yp.T + 2.0 * Xp @ W.T


def loss(features, A, P):
    """The summed loss via the cheap association (no ``S x S`` products)."""
    Zf = flatten(features)
    Xm = _parts_pass(to_columns(Zf), P, Zf.shape[2])
    return jnp.sum(Zf * Zf) + _f_from_Y(A.T @ Xm, A.T @ A, P.T @ P)[0]


def grads(features, A, P):
    """Both gradients at ``(A, P)`` (the appearance one at the same ``P``), for checks."""
    Zf = flatten(features)
    Zt = to_columns(Zf)
    Xm = _parts_pass(Zt, P, Zf.shape[2])
    AtA, PtP = A.T @ A, P.T @ P
    Y = A.T @ Xm
    gP, _ = _grad_parts(Zt, A, P, Y, AtA, PtP)
    return gP, _grad_appearance(Xm, A, Y, AtA, PtP)


# ---------------------------------------------------------------------------------------------
# Initialisation


def init_parts(key, S: int, rank_s: int, dtype=jnp.float32):
    """Parts uniform in [0, 0.01), as the original."""
    return jax.random.uniform(key, (S, rank_s), dtype, 0.0, 0.01)


@jax.jit
def _scatter(Zf):
    Z2 = Zf.reshape(-1, Zf.shape[-1])
    return Z2.T @ Z2


def _top_eigvecs(scatter, rank_c):
    # The scatter matrix is symmetric PSD: its left singular vectors are its eigenvectors.
    w, v = jnp.linalg.eigh(scatter)
    order = jnp.argsort(-w)
    return v[:, order[:rank_c]]


def hosvd_init(features_or_sample_fn, rank_c: int, *, key=None, batches: int = 10, batch_size: int = 16,
               sample_args=None):
    """Appearance init: the ``rank_c`` leading left singular vectors of the channel scatter
    matrix :math:`\\sum_i Z_i Z_i^T` (paper section 3.4).

    ``features_or_sample_fn`` is an array ``[N, H, W, C]``, or a jittable
    ``sample_fn(key, batch_size)`` returning such arrays; then ``batches`` batches are drawn and
    the scatter is summed in a streaming loop (memory independent of the total sample count).
    """
    if callable(features_or_sample_fn):
        fn = _bind(features_or_sample_fn, sample_args)
        key = jax.random.key(0) if key is None else key
        probe = jax.eval_shape(lambda k: fn(k, batch_size), key)
        if len(probe.shape) != 4:
            raise FeatureError(f"sample_fn must return [N, H, W, C] features; got shape {probe.shape}")
        C = probe.shape[-1]
        if not 1 <= rank_c <= C:
            raise RankError(f"R_C = {rank_c} must be in 1..{C} (the channels)")

        scat = _streamed_scatter(key, sample_args, sample_fn=features_or_sample_fn, batches=batches,
                                 batch_size=batch_size, C=C)
        if not bool(jnp.all(jnp.isfinite(scat))):
            raise FeatureError("sample_fn produced NaN/inf features; check the generator at this layer")
        return _top_eigvecs(scat, rank_c)
    x = check_features(features_or_sample_fn)
    C = x.shape[-1]
    if not 1 <= rank_c <= C:
        raise RankError(f"R_C = {rank_c} must be in 1..{C} (the channels)")
    return _top_eigvecs(_scatter(flatten(x)), rank_c)


@partial(jax.jit, static_argnames=("sample_fn", "batches", "batch_size", "C"))
def _streamed_scatter(key, args, *, sample_fn, batches, batch_size, C):
    """``sum_i Z_i Z_i^T`` over ``batches`` fresh batches; compiled once per sample_fn."""

    def body(i, acc):
        Z = _bind(sample_fn, args)(jax.random.fold_in(key, i), batch_size)
        return acc + _scatter(flatten(Z.astype(jnp.float32)))

    return jax.lax.fori_loop(0, batches, body, jnp.zeros((C, C), jnp.float32))


def _bind(sample_fn, args):
    if args is None:
        return sample_fn
    return lambda key, n: sample_fn(args, key, n)


# ---------------------------------------------------------------------------------------------
# One step of Algorithm 1


_GROW, _SHRINK, _TRIALS = 1.5, 0.5, 40


def _armijo_ok(f_new, f_old, g, delta, eta, scale):
    # Sufficient decrease on the quadratic upper bound; the slack absorbs float round-off of the
    # loss, whose terms cancel against the constant ||Z||^2 (``scale``).
    bound = f_old + jnp.sum(g * delta) + jnp.sum(delta * delta) / (2.0 * eta)
    return f_new <= bound + 1e-6 * scale


def _step_fixed(Zt, A, P, Xm, lr):
    """The original's step with a fixed learning rate. ``Xm`` (``X_n = Z_n P``) carried."""
    C = A.shape[0]
    AtA, PtP = A.T @ A, P.T @ P
    gP, f = _grad_parts(Zt, A, P, A.T @ Xm, AtA, PtP)
    P = jnp.maximum(P - lr * gP, 0.0)
    Xm = _parts_pass(Zt, P, C)
    gA = _grad_appearance(Xm, A, A.T @ Xm, AtA, P.T @ P)
    return A - lr * gA, P, Xm, f


def _step_auto(Zt, A, P, Xm, etaP, etaA, scale, capP, capA):
    """A step with each block's step size found by backtracking from the last accepted one
    (grown by a factor, up to a cap of ``AUTO_STEP / L`` from :func:`block_curvatures`)."""
    C = A.shape[0]
    AtA, PtP = A.T @ A, P.T @ P
    gP, f = _grad_parts(Zt, A, P, A.T @ Xm, AtA, PtP)

    def p_trial(eta):
        Pn = jnp.maximum(P - eta * gP, 0.0)
        Xn = _parts_pass(Zt, Pn, C)
        Yn = A.T @ Xn
        fn = _f_from_Y(Yn, AtA, Pn.T @ Pn)[0]
        return Pn, Xn, Yn, fn, _armijo_ok(fn, f, gP, Pn - P, eta, scale)

    def p_cond(c):
        return (~c[5]) & (c[6] < _TRIALS)

    def p_body(c):
        eta = c[0] * _SHRINK
        return (eta,) + p_trial(eta) + (c[6] + 1,)

    eta0 = jnp.minimum(etaP * _GROW, capP)
    etaP, Pn, Xn, Yn, fP, okP, _ = jax.lax.while_loop(p_cond, p_body, (eta0,) + p_trial(eta0) + (1,))
    P, Xm = jnp.where(okP, Pn, P), jnp.where(okP, Xn, Xm)
    Y = jnp.where(okP, Yn, A.T @ Xm)
    fP = jnp.where(okP, fP, f)

    PtP = P.T @ P
    gA = _grad_appearance(Xm, A, Y, AtA, PtP)

    def a_trial(eta):
        An = A - eta * gA
        fn = _f_from_Y(An.T @ Xm, An.T @ An, PtP)[0]
        return An, fn, _armijo_ok(fn, fP, gA, An - A, eta, scale)

    def a_cond(c):
        return (~c[3]) & (c[4] < _TRIALS)

    def a_body(c):
        eta = c[0] * _SHRINK
        return (eta,) + a_trial(eta) + (c[4] + 1,)

    eta0 = jnp.minimum(etaA * _GROW, capA)
    etaA, An, _, okA, _ = jax.lax.while_loop(a_cond, a_body, (eta0,) + a_trial(eta0) + (1,))
    A = jnp.where(okA, An, A)
    return A, P, Xm, f, etaP, etaA


AUTO_STEP = 0.5  # fraction of 1/L used as the step-size cap


@partial(jax.jit, static_argnames=("iters",))
def block_curvatures(Zt, A, iters: int = 30):
    """Power-iteration (features as ``Zt = [S, N*C]``, see :func:`to_columns`) estimates of the two blocks' curvature scales:
    ``lam_S = ||sum_i Z_i^T A A^T Z_i||_2`` (parts) and ``lam_C = ||sum_i Z_i Z_i^T||_2``
    (appearances; parts with unit columns). Reads the features ``2 * iters`` times; no
    ``S x S`` or ``C x C`` matrix is formed."""
    S, NC = Zt.shape
    C = A.shape[0]
    N = NC // C

    def op_s(v):
        t = (v @ Zt).reshape(N, C)
        return Zt @ ((t @ A) @ A.T).reshape(NC)

    def op_c(v):
        u = (Zt.reshape(S * N, C) @ v).reshape(S, N)  # u[s, n] = (Z_n v)_s
        return jnp.einsum("sn,snc->c", u, Zt.reshape(S, N, C))

    def power(op, n):
        v = jnp.ones((n,), Zt.dtype) / jnp.sqrt(n)

        def body(_, v):
            w = op(v)
            return w / jnp.maximum(jnp.linalg.norm(w), 1e-30)

        v = jax.lax.fori_loop(0, iters, body, v)
        return jnp.linalg.norm(op(v))

    return power(op_s, S), power(op_c, C)


def _auto_caps(Zt, A):
    lam_s, lam_c = block_curvatures(Zt, A)
    return AUTO_STEP / jnp.maximum(lam_s, 1e-30), AUTO_STEP / jnp.maximum(lam_c, 1e-30)


# ---------------------------------------------------------------------------------------------
# Fitting loops: many steps per jitted call, host touches only between chunks


@partial(jax.jit, static_argnames=("auto", "chunk"), donate_argnums=(1,))
def _run_chunk(Zt, state, n, lr, *, auto: bool, chunk: int):
    """Run ``n <= chunk`` steps on ``Zt = [S, N*C]`` (:func:`to_columns`); the state is
    ``(A, P, Xm, etaP, etaA)`` with ``Xm = _parts_pass(Zt, P, C)``. Returns the new state and
    the per-step losses (padded)."""
    sqz = jnp.sum(Zt * Zt)

    def body(t, carry):
        (A, P, Xm, etaP, etaA), losses = carry
        if auto:
            A, P, Xm, f, etaP, etaA = _step_auto(Zt, A, P, Xm, etaP, etaA, sqz, lr[0], lr[1])
        else:
            A, P, Xm, f = _step_fixed(Zt, A, P, Xm, lr[0])
        return (A, P, Xm, etaP, etaA), losses.at[t].set(f + sqz)

    losses = jnp.full((chunk,), jnp.nan, Zt.dtype)
    return jax.lax.fori_loop(0, n, body, (state, losses))


@partial(jax.jit, static_argnames=("chunk", "optimizer"), donate_argnums=(1, 2))
def _run_chunk_adam(Zt, params, opt_state, n, *, chunk: int, optimizer):
    import optax

    C = params[0].shape[0]
    N = Zt.shape[1] // C
    sqz = jnp.sum(Zt * Zt)

    def mean_loss(A, P):
        Xm = _parts_pass(Zt, P, C)
        return (sqz + _f_from_Y(A.T @ Xm, A.T @ A, P.T @ P)[0]) / N

    def body(t, carry):
        (A, P), (sP, sA), losses = carry
        f, gP = jax.value_and_grad(mean_loss, argnums=1)(A, P)
        upd, sP = optimizer.update(gP, sP, P)
        P = jnp.maximum(optax.apply_updates(P, upd), 0.0)
        gA = jax.grad(mean_loss, argnums=0)(A, P)
        upd, sA = optimizer.update(gA, sA, A)
        A = optax.apply_updates(A, upd)
        return (A, P), (sP, sA), losses.at[t].set(f * N)

    losses = jnp.full((chunk,), jnp.nan, Zt.dtype)
    return jax.lax.fori_loop(0, n, body, (params, opt_state, losses))


@dataclass
class FitResult:
    """What :func:`fit` returns (scikit-learn style attributes)."""

    factors: Factors
    losses: np.ndarray  # summed loss at the start of each step
    n_steps: int
    converged: bool
    seconds: float
    lr: dict = field(default_factory=dict)  # the step sizes in use at the end

    @property
    def reconstruction_err(self) -> float:
        return float(self.losses[-1]) if len(self.losses) else float("nan")


def _columns_put(Zf):
    """The features as ``Zt = [S, N*C]``, transposed once. With several devices, samples are
    sharded over a one-axis ``data`` mesh (column blocks of whole samples), padded with zero
    samples, which add nothing to the loss or the gradients. Returns ``(Zt, replicated)``."""
    devs = jax.devices()
    if len(devs) == 1:
        return jax.jit(to_columns)(Zf), None
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    mesh = Mesh(np.array(devs), ("data",))
    pad = (-Zf.shape[0]) % len(devs)
    if pad:
        Zf = jnp.concatenate([Zf, jnp.zeros((pad,) + Zf.shape[1:], Zf.dtype)])
    Zt = jax.jit(to_columns, out_shardings=NamedSharding(mesh, PartitionSpec(None, "data")))(Zf)
    return Zt, NamedSharding(mesh, PartitionSpec())


def _progress(total, enabled, desc):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="step", leave=False)


def _divergence(losses, start, lr_desc):
    bad = np.flatnonzero(~np.isfinite(losses))
    step = start + int(bad[0])
    raise DivergenceError(
        f"the loss became non-finite at step {step} with step size {lr_desc}; "
        "use lr='auto' or a smaller lr"
    )


def fit(
    features,
    ranks: Sequence[int],
    steps: int = 1000,
    lr: float | str = "auto",
    init: str | Factors = "hosvd",
    method: str = "pgd",
    key=None,
    *,
    tol: float = 0.0,
    chunk: int = 100,
    progress: bool = False,
    shard: bool = True,
) -> FitResult:
    """Fit appearances and parts to ``features`` ``[N, H, W, C]`` (paper Algorithm 1).

    Args:
      ranks: ``(R_C, R_S)``: numbers of appearances and parts.
      steps: maximum number of steps (each: parts, projected, then appearances).
      lr: ``"auto"`` (backtracking step sizes, no tuning) or a float: the original's step on
        the gradient of the loss summed over samples. With ``method="adam"``, Adam's rate
        (``"auto"`` = 1e-3).
      init: ``"hosvd"`` (appearances from the scatter matrix, parts uniform in [0, 0.01)) or
        explicit :class:`Factors`.
      method: ``"pgd"`` (Algorithm 1) or ``"adam"`` (the original's autograd variant: two Adam
        optimisers on the mean loss, parts projected after their step).
      key: ``jax.random`` key for the parts init (default ``key(0)``).
      tol: stop early once the relative loss decrease over a chunk falls below ``tol``.
      chunk: steps per jitted call; progress and checks run between chunks.
      progress: show a tqdm bar with the loss.
      shard: with several devices, shard samples over a one-axis mesh (factors replicated).
    """
    x = check_features(features)
    N, H, W, C = x.shape
    S = H * W
    rc, rs = check_ranks(ranks, C, S)
    steps = _check_steps(steps)
    lr_v = _check_lr(lr)
    if method not in ("pgd", "adam"):
        raise ConfigError(f"method must be 'pgd' or 'adam'; got {method!r}")
    if not isinstance(chunk, int) or chunk < 1:
        raise ConfigError(f"chunk must be a positive integer; got {chunk!r}")
    key = jax.random.key(0) if key is None else key
    Zf = flatten(x)
    if isinstance(init, Factors):
        check_factors(init, x.shape)
        if init.ranks != (rc, rs):
            raise RankError(f"init factors have ranks {init.ranks} but ranks={tuple(ranks)}; make them agree")
        # Copies: the loop donates its buffers, the caller keeps theirs.
        A = jnp.array(init.appearance, Zf.dtype, copy=True)
        P = jnp.maximum(jnp.array(init.parts, Zf.dtype, copy=True), 0.0)
    elif init == "hosvd":
        A = hosvd_init(x, rc).astype(Zf.dtype)
        P = init_parts(key, S, rs, Zf.dtype)
    else:
        raise ConfigError(f"init must be 'hosvd' or a Factors; got {init!r}")

    if shard:
        Zt, replicated = _columns_put(Zf)
        if replicated is not None:
            A, P = jax.device_put(A, replicated), jax.device_put(P, replicated)
    else:
        Zt = jax.jit(to_columns)(Zf)
    del Zf  # from here on the features are read only as Zt

    chunk = min(chunk, steps)
    t0 = time.perf_counter()
    losses: list[np.ndarray] = []
    bar = _progress(steps, progress, f"fit {H}x{W}x{C} R=({rc},{rs})")
    done, converged = 0, False
    lr_info: dict = {}
    if method == "pgd":
        auto = lr_v is None
        X = jax.jit(_parts_pass, static_argnums=2)(Zt, P, C)
        if auto:
            lr_arg = tuple(jnp.asarray(c, Zt.dtype) for c in _auto_caps(Zt, A))
        else:
            lr_arg = (jnp.asarray(lr_v, Zt.dtype),) * 2
        state = (A, P, X, lr_arg[0] + 0, lr_arg[1] + 0)  # copies: the state is donated
    else:
        import optax

        optimizer = optax.adam(1e-3 if lr_v is None else lr_v)
        params = (A, P)
        opt_state = (optimizer.init(P), optimizer.init(A))
    try:
        while done < steps:
            n = min(chunk, steps - done)
            if method == "pgd":
                state, ls = _run_chunk(Zt, state, n, lr_arg, auto=auto, chunk=chunk)
            else:
                params, opt_state, ls = _run_chunk_adam(Zt, params, opt_state, n, chunk=chunk, optimizer=optimizer)
            ls = np.asarray(ls)[:n]
            if not np.all(np.isfinite(ls)):
                desc = "auto" if (method == "pgd" and lr_v is None) else repr(lr_v)
                _divergence(ls, done, desc)
            if method == "pgd" and not bool(jnp.all(jnp.isfinite(state[0]))):
                _divergence(np.array([np.nan]), done + n - 1, "auto" if lr_v is None else repr(lr_v))
            prev = losses[-1][-1] if losses else None
            losses.append(ls)
            done += n
            if bar is not None:
                bar.update(n)
                bar.set_postfix(loss=f"{ls[-1]:.4g}")
            if tol > 0 and prev is not None and (prev - ls[-1]) <= tol * abs(prev):
                converged = True
                break
    finally:
        if bar is not None:
            bar.close()
    if method == "pgd":
        A, P = state[0], state[1]
        lr_info = {"parts": float(state[3]), "appearance": float(state[4])} if lr_v is None else {"parts": lr_v, "appearance": lr_v}
    else:
        A, P = params
        lr_info = {"adam": 1e-3 if lr_v is None else lr_v}
    A, P = jax.device_get(A), jax.device_get(P)
    factors = Factors(jnp.asarray(A), jnp.asarray(P), H, W)
    return FitResult(
        factors=factors,
        losses=np.concatenate(losses) if losses else np.zeros(0),
        n_steps=done,
        converged=converged,
        seconds=time.perf_counter() - t0,
        lr=lr_info,
    )


# ---------------------------------------------------------------------------------------------
# Stochastic fitting: a fresh batch every step, drawn inside the jitted loop


@partial(jax.jit, static_argnames=("sample_fn", "batch_size", "auto", "chunk"), donate_argnums=(0,))
def _run_stream_chunk(state, key, t0, n, lr, sample_args, *, sample_fn, batch_size, auto, chunk):
    fn = _bind(sample_fn, sample_args)

    def body(t, carry):
        (A, P, etaP, etaA), losses = carry
        Zf = flatten(fn(jax.random.fold_in(key, t0 + t), batch_size).astype(A.dtype))
        sqz = jnp.sum(Zf * Zf)
        Zt = to_columns(Zf)
        Xm = _parts_pass(Zt, P, Zf.shape[2])
        if auto:
            A, P, _, f, etaP, etaA = _step_auto(Zt, A, P, Xm, etaP, etaA, sqz, lr[0], lr[1])
        else:
            A, P, _, f = _step_fixed(Zt, A, P, Xm, lr[0])
        return (A, P, etaP, etaA), losses.at[t].set(f + sqz)

    losses = jnp.full((chunk,), jnp.nan, state[0].dtype)
    return jax.lax.fori_loop(0, n, body, (state, losses))


def fit_stream(
    sample_fn: Callable,
    ranks: Sequence[int],
    steps: int = 1000,
    batch_size: int = 8,
    lr: float | str = "auto",
    init: str | Factors = "hosvd",
    key=None,
    *,
    sample_args=None,
    hosvd_batches: int = 10,
    chunk: int = 100,
    progress: bool = False,
) -> FitResult:
    """The original's stochastic mode: each step draws a fresh batch
    ``sample_fn(key, batch_size)`` (``[B, H, W, C]``) inside the jitted loop.

    ``sample_fn`` must be jittable and hashable (a plain function). Large constants (generator
    weights) should come in through ``sample_args``: then it is called as
    ``sample_fn(sample_args, key, batch_size)``. Memory is independent of the total number of
    samples seen. With ``lr="auto"`` each step's sizes are chosen on that step's batch.
    """
    rc, rs = (int(r) for r in ranks)
    steps = _check_steps(steps)
    lr_v = _check_lr(lr)
    key = jax.random.key(0) if key is None else key
    k_init, k_parts, k_run = jax.random.split(key, 3)
    fn = _bind(sample_fn, sample_args)
    probe = jax.eval_shape(lambda k: fn(k, batch_size), k_init)
    if len(probe.shape) != 4:
        raise FeatureError(f"sample_fn must return [N, H, W, C] features; got shape {probe.shape}")
    _, H, W, C = probe.shape
    S = H * W
    rc, rs = check_ranks((rc, rs), C, S)
    if isinstance(init, Factors):
        check_factors(init, (1, H, W, C))
        A = jnp.array(init.appearance, jnp.float32, copy=True)
        P = jnp.array(init.parts, jnp.float32, copy=True)
    elif init == "hosvd":
        A = hosvd_init(sample_fn, rc, key=k_init, batches=hosvd_batches, batch_size=batch_size,
                       sample_args=sample_args)
        P = init_parts(k_parts, S, rs)
    else:
        raise ConfigError(f"init must be 'hosvd' or a Factors; got {init!r}")
    auto = lr_v is None
    if auto:
        Z0 = flatten(fn(k_init, batch_size).astype(jnp.float32))
        if not bool(jnp.all(jnp.isfinite(Z0))):
            raise FeatureError("sample_fn produced NaN/inf features; check the generator at this layer")
        lr_arg = tuple(jnp.asarray(c, jnp.float32) for c in _auto_caps(to_columns(Z0), A))
    else:
        lr_arg = (jnp.float32(lr_v),) * 2
    state = (A, P, lr_arg[0] + 0, lr_arg[1] + 0)  # copies: the state is donated
    chunk = min(chunk, steps)
    t0 = time.perf_counter()
    losses, done = [], 0
    bar = _progress(steps, progress, f"fit_stream {H}x{W}x{C} R=({rc},{rs})")
    try:
        while done < steps:
            n = min(chunk, steps - done)
            state, ls = _run_stream_chunk(state, k_run, done, n, lr_arg, sample_args, sample_fn=sample_fn,
                                          batch_size=batch_size, auto=auto, chunk=chunk)
            ls = np.asarray(ls)[:n]
            if not np.all(np.isfinite(ls)):
                _divergence(ls, done, "auto" if auto else repr(lr_v))
            losses.append(ls)
            done += n
            if bar is not None:
                bar.update(n)
                bar.set_postfix(loss=f"{ls[-1]:.4g}")
    finally:
        if bar is not None:
            bar.close()
    A, P = jax.device_get(state[0]), jax.device_get(state[1])
    return FitResult(
        factors=Factors(jnp.asarray(A), jnp.asarray(P), H, W),
        losses=np.concatenate(losses),
        n_steps=done,
        converged=False,
        seconds=time.perf_counter() - t0,
        lr={"parts": float(state[2]), "appearance": float(state[3])} if auto else {"parts": lr_v, "appearance": lr_v},
    )
