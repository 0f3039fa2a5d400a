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

:func:`fit` and :func:`fit_stream` are host-driven loops (:mod:`panda_jax.loop`): many steps
run per jitted call, and the host checks progress, convergence and divergence between calls.
They are not meant to be called inside ``jit``; the loss, its gradients and the steps are.
"""

from __future__ import annotations

import os
from functools import partial
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from . import checks
from .errors import ConfigError, FeatureError, RankError
from .factors import Factors, check_factors
from .loop import FitResult, run_loop, to_host

# ---------------------------------------------------------------------------------------------
# Shapes


def check_features(features, name: str = "features") -> jax.Array:
    """``features`` as a float array ``[N, H, W, C]``; raises :class:`FeatureError` otherwise."""
    return checks.features(features, name)


def flatten(features) -> jax.Array:
    """``[N, H, W, C]`` -> ``[N, S, C]`` with ``s = h * W + w`` (``[N, S, C]`` is returned as it is)."""
    if features.ndim == 3:
        return features
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
# On the CPU the fit also keeps ``Zc = [N*C, S]`` (:func:`to_rows`) where memory allows
# (:func:`_rows_for`): XLA's CPU backend runs ``Zc P`` about twice as fast as ``P^T Zt`` (and
# ``Zt V`` is the fast form of the other pass), so both passes read the layout they run fastest
# on, at twice the feature memory (``benchmarks/RESULTS.md``, fit rows).
# Small per-sample quantities are kept as matrices with columns ``n*R + r``:
# ``Xm = [C, N*R]`` (``X_n = Z_n P``), ``Y = [R_C, N*R]`` (``Y_n = A^T X_n``).


def to_columns(Zf):
    """``[N, S, C]`` (or ``[N, H, W, C]``) -> ``Zt = [S, N*C]``."""
    Zf = flatten(Zf)
    N, S, C = Zf.shape
    return jnp.transpose(Zf, (1, 0, 2)).reshape(S, N * C)


def to_rows(Zf):
    """``[N, S, C]`` (or ``[N, H, W, C]``) -> ``Zc = [N*C, S]`` (row ``n*C + c``): the parts pass's
    fast layout on the CPU."""
    Zf = flatten(Zf)
    N, S, C = Zf.shape
    return jnp.transpose(Zf, (0, 2, 1)).reshape(N * C, S)


def _parts_pass(Zt, P, C, Zc=None):
    """``Xm = [C, N*R]`` with blocks ``X_n = Z_n P``: one read of the features (of ``Zc`` when
    given, the same numbers in :func:`to_rows`'s layout)."""
    S, NC = Zt.shape
    N, R = NC // C, P.shape[1]
    if Zc is not None:
        return jnp.transpose((Zc @ P).reshape(N, C, R), (1, 0, 2)).reshape(C, N * R)
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


def _gram(A, NR: int):
    """``A^T A`` where forming it is cheaper than applying ``A`` and then ``A^T`` to each
    ``[R_C, N*R_S]`` block (``R_C <= N R_S``); otherwise ``None`` (see :func:`_gram_times`)."""
    return A.T @ A if A.shape[1] <= NR else None


def _gram_times(A, G, Y):
    """``W = A^T A Y`` and ``A Y`` (``None`` where ``W`` came from the formed Gram ``G``)."""
    if G is None:
        AY = A @ Y
        return A.T @ AY, AY
    return G @ Y, None


def _f_from_Y(Y, A, G, PtP):
    """The loss minus ``sum ||Z_i||^2``, and ``W = A^T A Y``, ``sum_n Y_n^T W_n`` and ``A Y``
    (or ``None``, see :func:`_gram_times`)."""
    R = PtP.shape[0]
    W, AY = _gram_times(A, G, Y)
    YtW = _blocks_gram(Y, W, R)
    return -2.0 * jnp.sum(Y * Y) + jnp.sum(YtW * PtP), W, YtW, AY


def _u(Y, W, PtP):
    """``U = -4 Y + 2 W P^T P`` (per sample): ``A U`` is the parts gradient's right factor and
    ``X U^T`` two of the appearance gradient's three terms."""
    return -4.0 * Y + 2.0 * _per_sample(W, PtP, PtP.shape[0])


def _grad_parts(Zt, A, P, Y, G, PtP):
    """:math:`\nabla_P` and the loss terms given ``Y``: one read of the features (``Zt V``)."""
    S, NC = Zt.shape
    C, R = A.shape[0], P.shape[1]
    N = NC // C
    f, W, YtW, _ = _f_from_Y(Y, A, G, PtP)
    V = A @ _u(Y, W, PtP)  # [C, N*R]
    Vf = jnp.transpose(V.reshape(C, N, R), (1, 0, 2)).reshape(N * C, R)
    return Zt @ Vf + 2.0 * P @ YtW, f


def _grad_appearance(Xm, A, Y, G, PtP):
    """:math:`\nabla_A` given ``Xm`` (``X_n = Z_n P``) and ``Y = A^T Xm``; no feature reads.
    ``-4 X Y^T + 2 (A Y) (Y P^T P)^T + 2 (X P^T P) W^T`` summed over samples, computed as
    ``X U^T + 2 (A Y) (Y P^T P)^T`` (:func:`_u`; ``P^T P`` is symmetric), with the second
    term as ``A (Y (Y P^T P)^T)`` where the Gram was formed (``R_C <= N R_S``: cheaper)."""
    W, AY = _gram_times(A, G, Y)
    Yp = _per_sample(Y, PtP, PtP.shape[0])
    second = A @ (Y @ Yp.T) if AY is None else AY @ Yp.T
    return Xm @ _u(Y, W, PtP).T + 2.0 * second


def loss(features, A, P):
    """The summed loss via the cheap association (no ``S x S`` products)."""
    Zf = flatten(features)
    Xm = _parts_pass(to_columns(Zf), P, Zf.shape[2])
    return jnp.sum(Zf * Zf) + _f_from_Y(A.T @ Xm, A, _gram(A, Xm.shape[1]), P.T @ P)[0]


def grads(features, A, P):
    """Both gradients at ``(A, P)`` (the appearance one at the same ``P``), for checks."""
    Zf = flatten(features)
    Zt = to_columns(Zf)
    Xm = _parts_pass(Zt, P, Zf.shape[2])
    G, PtP = _gram(A, Xm.shape[1]), P.T @ P
    Y = A.T @ Xm
    gP, _ = _grad_parts(Zt, A, P, Y, G, PtP)
    return gP, _grad_appearance(Xm, A, Y, G, PtP)


# ---------------------------------------------------------------------------------------------
# Sharding over samples: one ``data`` axis over all devices (of all processes)


def _data_mesh(shard: bool = True):
    """A one-axis ``data`` mesh over all of ``jax.devices()`` (every process's, after
    ``jax.distributed.initialize()``), or None with one device or ``shard=False``."""
    devs = jax.devices()
    if not shard or len(devs) == 1:
        return None
    from jax.sharding import Mesh

    return Mesh(np.array(devs), ("data",))


def _replicated(mesh):
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec())


def _put_replicated(tree, mesh):
    """The arrays of ``tree`` replicated over ``mesh``, each process placing its own copy on its
    own devices (every process holds the same values: keys, factors, ``sample_args``). Unlike
    ``jax.device_put`` this takes committed arrays too and moves nothing between processes."""
    sharding = _replicated(mesh)

    def put(x):
        if isinstance(x, jax.Array) and x.sharding == sharding:
            return x
        if isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=jax.random.key_impl(x))
        if not isinstance(x, jax.Array):
            x = np.asarray(x)
        elif not x.is_fully_addressable:
            x = to_host(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x)  # replicated: all of x

    return jax.tree_util.tree_map(put, tree)


def _same_call_everywhere(name: str, settings: dict) -> None:
    """With several processes every one must make the same call: another ``steps`` would leave a
    process waiting in a collective for ever, other features would fit a mix of samples. Compare
    a digest of ``settings`` (numbers and arrays; a few collectives) and refuse a mismatch."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    parts = [np.ravel(np.asarray(v, np.float32)) for v in settings.values()]
    gathered = np.asarray(multihost_utils.process_allgather(np.concatenate(parts)))  # [processes, digest]
    ends = np.cumsum([len(p) for p in parts])
    differ = [k for k, a, b in zip(settings, ends - [len(p) for p in parts], ends)
              if not (gathered[:, a:b] == gathered[0, a:b]).all()]
    if differ:
        raise ConfigError(
            f"the {gathered.shape[0]} processes called {name} with different {', '.join(differ)}; every process "
            f"must make the same call (same features, settings and key) after jax.distributed.initialize()"
        )


def _key_digest(key):
    """A key's bits as float32-exact numbers (16-bit halves)."""
    k = np.asarray(jax.random.key_data(key), np.uint32).ravel()
    return np.concatenate([k >> 16, k & 0xFFFF])


def _columns_sharding(mesh):
    from jax.sharding import NamedSharding, PartitionSpec

    return NamedSharding(mesh, PartitionSpec(None, "data"))


def _shard_map(f, mesh, in_specs, out_specs):
    """``shard_map`` without replication checks (``sample_fn`` is the caller's code)."""
    if hasattr(jax, "shard_map"):
        return jax.shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_vma=False)
    from jax.experimental.shard_map import shard_map

    return shard_map(f, mesh=mesh, in_specs=in_specs, out_specs=out_specs, check_rep=False)


def _draw(sample_fn, args, key, batch_size: int, mesh):
    """The batch ``key`` stands for, ``[batch_size, H, W, C]``. On one device (``mesh`` None):
    ``sample_fn(key, batch_size)``. On a mesh of ``D`` devices, device ``d`` draws its own share
    ``sample_fn(fold_in(key, d), batch_size // D)`` and the batch is their concatenation in
    device order, sharded over samples: no device draws another's samples."""
    if mesh is None:
        return _bind(sample_fn, args)(key, batch_size)
    from jax.sharding import PartitionSpec

    D = mesh.size

    def local(args, key):
        d = jax.lax.axis_index("data")
        return _bind(sample_fn, args)(jax.random.fold_in(key, d), batch_size // D)

    return _shard_map(local, mesh, (PartitionSpec(), PartitionSpec()), PartitionSpec("data"))(args, key)


def _draw_columns(sample_fn, args, key, batch_size, mesh, dtype):
    """:func:`_draw` as ``(Zt, sum ||Z_i||^2)``, ``Zt`` column-sharded over ``mesh``."""
    Zf = flatten(_draw(sample_fn, args, key, batch_size, mesh).astype(dtype))
    Zt = to_columns(Zf)
    if mesh is not None:
        Zt = jax.lax.with_sharding_constraint(Zt, _columns_sharding(mesh))
    return Zt, jnp.sum(Zf * Zf)


@partial(jax.jit, static_argnames=("sample_fn", "batch_size", "mesh"))
def _first_batch(args, key, *, sample_fn, batch_size, mesh):
    """The batch :func:`_draw` gives for ``key`` as ``Zt`` (float32), and its NaN/inf count."""
    Zt, _ = _draw_columns(sample_fn, args, key, batch_size, mesh, jnp.float32)
    return Zt, jnp.sum(~jnp.isfinite(Zt))


# ---------------------------------------------------------------------------------------------
# Initialisation


@partial(jax.jit, static_argnums=(1, 2, 3))
def init_parts(key, S: int, rank_s: int, dtype=jnp.float32):
    """Parts uniform in [0, 0.01), as the original."""
    return jax.random.uniform(key, (S, rank_s), dtype, 0.0, 0.01)


@jax.jit
def _scatter(Zf):
    Z2 = Zf.reshape(-1, Zf.shape[-1])
    return Z2.T @ Z2


def _top_eigvecs(scatter, rank_c):
    """The ``rank_c`` leading eigenvectors of the (concrete) ``C x C`` scatter matrix.

    The scatter is symmetric PSD: its left singular vectors are its eigenvectors. It is
    decomposed on the host in float64 (NumPy's LAPACK): for ``C`` up to a few thousand this
    takes milliseconds, where JAX's first ``eigh`` in a process took 0.4 s (the lowering and
    the import of its LAPACK kernels). A scatter summed over devices is replicated; every
    process decomposes the same matrix. Under a trace (``hosvd_init`` inside a user's ``jit``)
    JAX's ``eigh`` decomposes it instead."""
    if isinstance(scatter, jax.core.Tracer):
        w, v = jnp.linalg.eigh(scatter)
        return v[:, jnp.argsort(-w)[:rank_c]]
    s = np.asarray(jax.device_get(scatter), np.float64)
    w, v = np.linalg.eigh(s)
    order = np.argsort(-w, kind="stable")
    return jax.device_put(np.asarray(v[:, order[:rank_c]], dtype=scatter.dtype))  # no program: a transfer


def _bind(sample_fn, args):
    if args is None:
        return sample_fn
    return lambda key, n: sample_fn(args, key, n)


def _probe(sample_fn, sample_args, key, batch_size):
    """The shape ``(B, H, W, C)`` a ``sample_fn`` returns, without running it."""
    if not callable(sample_fn):
        raise ConfigError(
            f"sample_fn must be a function sample_fn(key, n) (or sample_fn(args, key, n) with sample_args) "
            f"returning [n, H, W, C] features; got a {type(sample_fn).__name__}"
        )
    fn = _bind(sample_fn, sample_args)
    try:
        probe = jax.eval_shape(lambda k: fn(k, batch_size), key)
    except TypeError as e:
        raise ConfigError(
            f"sample_fn could not be called as sample_fn({'args, ' if sample_args is not None else ''}key, n) "
            f"({e}); give a function of that form"
        ) from None
    if not hasattr(probe, "shape") or len(probe.shape) != 4:
        raise FeatureError(f"sample_fn must return [N, H, W, C] features; got {getattr(probe, 'shape', probe)!r}")
    if not jnp.issubdtype(probe.dtype, jnp.floating):
        raise FeatureError(f"sample_fn must return floating-point features; got dtype {probe.dtype}")
    return tuple(probe.shape)


def hosvd_init(features_or_sample_fn, rank_c: int, *, key=None, batches: int = 10, batch_size: int = 16,
               sample_args=None):
    """Appearance init: the ``rank_c`` leading left singular vectors of the channel scatter
    matrix :math:`\\sum_i Z_i Z_i^T` (paper section 3.4).

    ``features_or_sample_fn`` is an array ``[N, H, W, C]``, or a jittable
    ``sample_fn(key, batch_size)`` returning such arrays; then ``batches`` batches are drawn and
    the scatter is summed in a streaming loop (memory independent of the total sample count).
    """
    if callable(features_or_sample_fn):
        return _hosvd_streamed(features_or_sample_fn, rank_c, key, batches, batch_size, sample_args, None)
    x = check_features(features_or_sample_fn)
    rank_c = checks.integer(rank_c, "R_C", high=x.shape[-1], error=RankError)
    return _top_eigvecs(_scatter(flatten(x)), rank_c)


def _hosvd_streamed(sample_fn, rank_c, key, batches, batch_size, sample_args, mesh):
    """:func:`hosvd_init` from ``sample_fn``; with a ``mesh`` each batch is drawn as in
    :func:`fit_stream` (every device its own share) and the scatter is summed over devices."""
    key = checks.key(key)
    batches = checks.integer(batches, "batches")
    batch_size = checks.integer(batch_size, "batch_size")
    C = _probe(sample_fn, sample_args, key, batch_size // (mesh.size if mesh is not None else 1))[-1]
    rank_c = checks.integer(rank_c, "R_C", high=C, error=RankError)
    scat = _streamed_scatter(key, sample_args, sample_fn=sample_fn, batches=batches, batch_size=batch_size, C=C,
                             mesh=mesh)
    checks.require_finite(scat, "sample_fn produced NaN/inf features; check the generator at this layer")
    return _top_eigvecs(scat, rank_c)


@partial(jax.jit, static_argnames=("sample_fn", "batches", "batch_size", "C", "mesh"))
def _streamed_scatter(key, args, *, sample_fn, batches, batch_size, C, mesh=None):
    """``sum_i Z_i Z_i^T`` over ``batches`` fresh batches (:func:`_draw`); compiled once per
    sample_fn. On a mesh each device adds its own samples and the sum is all-reduced."""

    def body(i, acc):
        Z = _draw(sample_fn, args, jax.random.fold_in(key, i), batch_size, mesh)
        return acc + _scatter(flatten(Z.astype(jnp.float32)))

    scat = jax.lax.fori_loop(0, batches, body, jnp.zeros((C, C), jnp.float32))
    return scat if mesh is None else jax.lax.with_sharding_constraint(scat, _replicated(mesh))


# ---------------------------------------------------------------------------------------------
# One step of Algorithm 1

_GROW, _SHRINK, _TRIALS = 1.5, 0.5, 40


def armijo_ok(f_new, f_old, g, delta, eta, scale):
    """Sufficient decrease on the quadratic upper bound (projected-gradient Armijo rule); the
    slack absorbs float round-off of a loss whose terms cancel against ``||Z||^2`` (``scale``)."""
    bound = f_old + jnp.sum(g * delta) + jnp.sum(delta * delta) / (2.0 * eta)
    return f_new <= bound + 1e-6 * scale


class Search(NamedTuple):
    """A backtracking search's loop state: the step tried, its outcome, accepted?, trials."""

    eta: jax.Array
    out: Any
    ok: jax.Array
    tries: jax.Array


def backtrack(trial: Callable, eta0) -> Search:
    """Try ``eta0, eta0/2, ...`` (at most ``_TRIALS``) until ``trial(eta) -> (out, ok)`` accepts."""

    def cond(s: Search):
        return (~s.ok) & (s.tries < _TRIALS)

    def body(s: Search):
        eta = s.eta * _SHRINK
        return Search(eta, *trial(eta), s.tries + 1)

    return jax.lax.while_loop(cond, body, Search(eta0, *trial(eta0), jnp.int32(1)))


class PGDState(NamedTuple):
    """The fit's loop state: factors, ``Xm`` (``X_n = Z_n P``, :func:`_parts_pass`) and the
    step sizes in use (fixed, or the last accepted ones with ``lr="auto"``)."""

    A: jax.Array
    P: jax.Array
    Xm: jax.Array
    eta_parts: jax.Array
    eta_appearance: jax.Array


class _PartsTrial(NamedTuple):
    P: jax.Array
    Xm: jax.Array
    Y: jax.Array
    f: jax.Array


def _step_fixed(Zt, s: PGDState, Zc=None) -> tuple[PGDState, jax.Array]:
    """The original's step with a fixed learning rate; returns the new state and the loss
    (minus ``||Z||^2``) at the start of the step."""
    A, P, C = s.A, s.P, s.A.shape[0]
    G, PtP = _gram(A, s.Xm.shape[1]), P.T @ P
    gP, f = _grad_parts(Zt, A, P, A.T @ s.Xm, G, PtP)
    P = jnp.maximum(P - s.eta_parts * gP, 0.0)
    Xm = _parts_pass(Zt, P, C, Zc)
    gA = _grad_appearance(Xm, A, A.T @ Xm, G, P.T @ P)
    return s._replace(A=A - s.eta_appearance * gA, P=P, Xm=Xm), f


def _step_auto(Zt, s: PGDState, scale, cap_parts, cap_appearance, Zc=None) -> tuple[PGDState, jax.Array]:
    """A step with each block's step size found by backtracking from the last accepted one
    (grown by a factor, up to a cap of ``AUTO_STEP / L`` from :func:`block_curvatures`)."""
    A, P, C = s.A, s.P, s.A.shape[0]
    NR = s.Xm.shape[1]
    G, PtP = _gram(A, NR), P.T @ P
    gP, f = _grad_parts(Zt, A, P, A.T @ s.Xm, G, PtP)

    def parts_trial(eta):
        Pn = jnp.maximum(P - eta * gP, 0.0)
        Xn = _parts_pass(Zt, Pn, C, Zc)
        Yn = A.T @ Xn
        fn = _f_from_Y(Yn, A, G, Pn.T @ Pn)[0]
        return _PartsTrial(Pn, Xn, Yn, fn), armijo_ok(fn, f, gP, Pn - P, eta, scale)

    sp = backtrack(parts_trial, jnp.minimum(s.eta_parts * _GROW, cap_parts))
    P, Xm = jnp.where(sp.ok, sp.out.P, P), jnp.where(sp.ok, sp.out.Xm, s.Xm)
    Y = jnp.where(sp.ok, sp.out.Y, A.T @ Xm)
    fP = jnp.where(sp.ok, sp.out.f, f)

    PtP = P.T @ P
    gA = _grad_appearance(Xm, A, Y, G, PtP)

    def appearance_trial(eta):
        An = A - eta * gA
        fn = _f_from_Y(An.T @ Xm, An, _gram(An, NR), PtP)[0]
        return An, armijo_ok(fn, fP, gA, An - A, eta, scale)

    sa = backtrack(appearance_trial, jnp.minimum(s.eta_appearance * _GROW, cap_appearance))
    A = jnp.where(sa.ok, sa.out, A)
    return PGDState(A, P, Xm, sp.eta, sa.eta), f


AUTO_STEP = 0.5  # fraction of 1/L used as the step-size cap


@partial(jax.jit, static_argnames=("iters",))
def block_curvatures(Zt, A, iters: int = 30):
    """Power-iteration (features as ``Zt = [S, N*C]``, see :func:`to_columns`) estimates of the two blocks' curvature scales:
    ``lam_S = ||sum_i Z_i^T A A^T Z_i||_2`` (parts) and ``lam_C = ||sum_i Z_i Z_i^T||_2``
    (appearances; parts with unit columns). Reads the features ``2 * iters`` times; no
    ``S x S`` or ``C x C`` matrix is formed, and no copy of the features: the two products that
    sum over the features' leading axis are written as broadcast multiply-and-sum, one fused read
    each (as dots, XLA's CPU backend first transposed the features, twice their size in
    temporaries)."""
    S, NC = Zt.shape
    C = A.shape[0]
    N = NC // C
    Zr = Zt.reshape(S * N, C)  # row (s, n) is position s of sample n

    def op_s(v):
        t = jnp.sum(v[:, None] * Zt, axis=0).reshape(N, C)  # t[n] = Z_n v
        return Zt @ ((t @ A) @ A.T).reshape(NC)

    def op_c(v):
        u = Zr @ v  # u[(s, n)] = (Z_n^T v)_s
        return jnp.sum(u[:, None] * Zr, axis=0)

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
# Jitted chunks: many steps per call; the host loop (panda_jax.loop) runs between calls


@partial(jax.jit, static_argnames=("auto", "chunk"), donate_argnums=(1,))
def _run_chunk(Zt, state: PGDState, n, caps, Zc=None, *, auto: bool, chunk: int):
    """``n <= chunk`` steps on ``Zt = [S, N*C]`` (:func:`to_columns`; and ``Zc``, the same
    features as :func:`to_rows`, or None); returns the new state and the summed loss at the
    start of each step (padded with NaN to ``chunk``)."""
    sqz = jnp.sum(Zt * Zt)

    def body(t, carry):
        s, losses = carry
        s, f = _step_auto(Zt, s, sqz, caps[0], caps[1], Zc) if auto else _step_fixed(Zt, s, Zc)
        return s, losses.at[t].set(f + sqz)

    return jax.lax.fori_loop(0, n, body, (state, jnp.full((chunk,), jnp.nan, Zt.dtype)))


class AdamState(NamedTuple):
    """The Adam variant's loop state: factors and each block's optimiser state."""

    A: jax.Array
    P: jax.Array
    opt_parts: Any
    opt_appearance: Any


@partial(jax.jit, static_argnames=("chunk", "optimizer"), donate_argnums=(1,))
def _run_chunk_adam(Zt, state: AdamState, n, *, chunk: int, optimizer):
    import optax

    C = state.A.shape[0]
    N = Zt.shape[1] // C
    sqz = jnp.sum(Zt * Zt)

    def mean_loss(A, P):
        Xm = _parts_pass(Zt, P, C)  # not Zc: the gradient of Zc P would read Zc in its slow form
        return (sqz + _f_from_Y(A.T @ Xm, A, _gram(A, Xm.shape[1]), P.T @ P)[0]) / N

    def body(t, carry):
        s, losses = carry
        f, gP = jax.value_and_grad(mean_loss, argnums=1)(s.A, s.P)
        upd, sP = optimizer.update(gP, s.opt_parts, s.P)
        P = jnp.maximum(optax.apply_updates(s.P, upd), 0.0)
        gA = jax.grad(mean_loss, argnums=0)(s.A, P)
        upd, sA = optimizer.update(gA, s.opt_appearance, s.A)
        return AdamState(optax.apply_updates(s.A, upd), P, sP, sA), losses.at[t].set(f * N)

    return jax.lax.fori_loop(0, n, body, (state, jnp.full((chunk,), jnp.nan, Zt.dtype)))


class StreamState(NamedTuple):
    """:func:`fit_stream`'s loop state: factors and step sizes (no features are carried)."""

    A: jax.Array
    P: jax.Array
    eta_parts: jax.Array
    eta_appearance: jax.Array


@partial(jax.jit, static_argnames=("sample_fn", "batch_size", "auto", "chunk", "mesh"), donate_argnums=(0,))
def _run_stream_chunk(state: StreamState, key, t0, n, caps, sample_args, *, sample_fn, batch_size, auto, chunk,
                      mesh=None):
    """Steps ``t0 .. t0+n-1``, step ``t`` on the batch :func:`_draw` gives for ``fold_in(key, t)``
    (``sample_fn(fold_in(key, t), batch_size)`` on one device). On a mesh the batch stays
    sharded over samples and the summed gradients and losses are all-reduced, as in :func:`fit`."""

    def body(t, carry):
        s, losses = carry
        Zt, sqz = _draw_columns(sample_fn, sample_args, jax.random.fold_in(key, t0 + t), batch_size, mesh,
                                s.A.dtype)
        full = PGDState(s.A, s.P, _parts_pass(Zt, s.P, s.A.shape[0]), s.eta_parts, s.eta_appearance)
        full, f = _step_auto(Zt, full, sqz, caps[0], caps[1]) if auto else _step_fixed(Zt, full)
        return StreamState(full.A, full.P, full.eta_parts, full.eta_appearance), losses.at[t].set(f + sqz)

    return jax.lax.fori_loop(0, n, body, (state, jnp.full((chunk,), jnp.nan, state.A.dtype)))


# ---------------------------------------------------------------------------------------------
# The public fits


_to_columns = jax.jit(to_columns)
_to_rows = jax.jit(to_rows)


def _columns_put(Zf):
    """The features as ``Zt = [S, N*C]``, transposed once. With several devices, samples are
    sharded over a one-axis ``data`` mesh (column blocks of whole samples), padded with zero
    samples, which add nothing to the loss or the gradients. Returns ``(Zt, mesh)`` (``mesh``
    None on one device).

    Every process holds all of ``Zf`` (the same array); each one builds only the column blocks
    of its own devices (:func:`jax.make_array_from_callback`), so this is the same call on one
    host and on several after ``jax.distributed.initialize()``."""
    mesh = _data_mesh()
    if mesh is None:
        return _to_columns(Zf), None
    Zf = flatten(Zf)
    N, S, C = Zf.shape
    D = mesh.size
    pad = (-N) % D
    if pad:
        Zf = jnp.concatenate([Zf, jnp.zeros((pad,) + Zf.shape[1:], Zf.dtype)])
    per = Zf.shape[0] // D  # samples per device: device d holds columns of samples [d*per, (d+1)*per)

    def block(index):
        first = index[1].indices(Zf.shape[0] * C)[0] // C
        return _columns_block(Zf, first, per)

    Zt = jax.make_array_from_callback((S, Zf.shape[0] * C), _columns_sharding(mesh), block)
    return Zt, mesh


ROWS_MEMORY_FRACTION = 0.125  # the second layout's cap, as a fraction of the machine's memory


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _rows_for(Zf, mesh):
    """The features also as ``Zc`` (:func:`to_rows`) for the parts pass, or None: only on one
    CPU device (XLA's GPU and TPU backends run ``P^T Zt`` at full speed, and a sharded fit keeps
    one layout) and only while the copy takes at most :data:`ROWS_MEMORY_FRACTION` of memory."""
    if mesh is not None or jax.default_backend() != "cpu":
        return None
    total = _physical_memory()
    if total is None or Zf.nbytes > ROWS_MEMORY_FRACTION * total:
        return None
    return _to_rows(Zf)


@partial(jax.jit, static_argnums=2)
def _columns_block(Zf, first, n):
    """Samples ``first .. first+n-1`` of ``Zf`` as columns (:func:`to_columns`)."""
    return to_columns(jax.lax.dynamic_slice_in_dim(Zf, first, n, axis=0))


def _init_factors(init, shape, ranks, dtype, hosvd, key):
    """``(A, P)`` from ``init``: ``"hosvd"`` (``hosvd()`` gives ``A``; parts uniform) or
    :class:`Factors` (copied: the loop donates its buffers; parts clipped at zero)."""
    _, H, W, C = shape
    if isinstance(init, Factors):
        check_factors(init, shape)
        if init.ranks != ranks:
            raise RankError(f"init factors have ranks {init.ranks} but ranks={ranks}; make them agree")
        checks.require_finite((init.appearance, init.parts), "init factors hold NaN/inf; give finite factors",
                              error=ConfigError)
        A = jnp.array(init.appearance, dtype, copy=True)
        P = jnp.maximum(jnp.array(init.parts, dtype, copy=True), 0.0)
        return A, P
    if isinstance(init, str) and init == "hosvd":
        A = hosvd()
        return (A if A.dtype == dtype else A.astype(dtype)), init_parts(key, H * W, ranks[1], jnp.dtype(dtype))
    raise ConfigError(f"init must be 'hosvd' or a Factors; got {init!r}")


def _lr_desc(lr_v) -> str:
    return "auto" if lr_v is None else repr(lr_v)


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
    checkpoint: str | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
) -> FitResult:
    """Fit appearances and parts to ``features`` ``[N, H, W, C]`` (paper Algorithm 1).

    A host-driven loop (see :mod:`panda_jax.loop`): call it from Python, not inside ``jit``.

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
      tol: stop early once the relative decrease of the loss over a chunk falls below ``tol``;
        a :class:`~panda_jax.errors.ConvergenceWarning` says when ``steps`` ran out first.
      chunk: steps per jitted call; progress and checks run between chunks.
      progress: show progress (a bar on a terminal, a log line per chunk otherwise).
      shard: with several devices, shard samples over a one-axis mesh (factors replicated):
        all of ``jax.devices()``, which after ``jax.distributed.initialize()`` are every
        process's. Then every process passes the same ``features`` and gets the same result;
        each process places only its own devices' samples.
      checkpoint: a directory for the fit state (orbax, atomic), saved every
        ``checkpoint_every`` steps and on Ctrl-C; with ``resume=True`` a killed fit continues
        from the latest state there and ends with the factors of an uninterrupted run.
    """
    x = check_features(features)
    N, H, W, C = x.shape
    rc, rs = checks.ranks(ranks, C, H * W)
    steps = checks.steps(steps)
    lr_v = checks.lr(lr)
    tol = checks.tol(tol)
    key = checks.key(key)
    if method not in ("pgd", "adam"):
        raise ConfigError(f"method must be 'pgd' or 'adam'; got {method!r}")
    chunk = checks.integer(chunk, "chunk")
    if shard and jax.process_count() > 1:  # the digest reads all features: only where it is compared
        _same_call_everywhere("pj.fit", {
            "features": [N, H, W, C, float(jnp.sum(x)), float(jnp.sum(x * x))], "ranks": [rc, rs],
            "steps": steps, "lr": -1.0 if lr_v is None else lr_v, "method": method == "adam", "tol": tol,
            "chunk": chunk, "key": _key_digest(key)})
    # x is checked (finite, rank R_C valid): the init needs only the scatter, not hosvd_init's checks again.
    # The layouts take x as it is ([N, H, W, C]): flattening it first would be one more program to load.
    A, P = _init_factors(init, x.shape, (rc, rs), x.dtype, lambda x=x: _top_eigvecs(_scatter(x), rc), key)
    mesh = None
    if shard:
        Zt, mesh = _columns_put(x)
        if mesh is not None:
            A, P = _put_replicated((A, P), mesh)
    else:
        Zt = _to_columns(x)
    Zc = _rows_for(x, mesh) if method == "pgd" else None
    del x  # from here on the features are read only as Zt (and Zc)

    if method == "pgd":
        auto = lr_v is None
        X = jax.jit(_parts_pass, static_argnums=2)(Zt, P, C, Zc)
        if auto:
            caps = tuple(jnp.asarray(c, Zt.dtype) for c in _auto_caps(Zt, A))
            state = PGDState(A, P, X, caps[0] + 0, caps[1] + 0)  # copies: the state is donated
        else:
            # host scalars, transferred (no program to load); the state gets buffers of its own (donated)
            put = jax.device_put if mesh is None else (lambda v: _put_replicated(v, mesh))
            lr_np = np.asarray(lr_v, Zt.dtype)
            caps = (put(lr_np),) * 2  # read only
            state = PGDState(A, P, X, put(lr_np), put(lr_np))

        def run(state, done, n, constants):
            return _run_chunk(Zt, state, n, constants["caps"], Zc, auto=auto, chunk=chunk)

        def lr_info(state):
            if auto:
                return {"parts": float(to_host(state.eta_parts)), "appearance": float(to_host(state.eta_appearance))}
            return {"parts": lr_v, "appearance": lr_v}
    else:
        import optax

        rate = 1e-3 if lr_v is None else lr_v
        optimizer = optax.adam(rate)
        state = AdamState(A, P, optimizer.init(P), optimizer.init(A))
        if mesh is not None:  # the step counts too: every input of the step replicated from the start
            state = _put_replicated(state, mesh)
        caps = ()

        def run(state, done, n, constants):
            return _run_chunk_adam(Zt, state, n, chunk=chunk, optimizer=optimizer)

        def lr_info(state):
            return {"adam": rate}

    def fingerprint():  # what a resumed fit must agree with (computed only when checkpointing)
        return {"kind": f"fit-{method}", "features": [N, H, W, C], "ranks": [rc, rs], "lr": _lr_desc(lr_v),
                "sum_sq": float(to_host(jnp.sum(Zt * Zt)))}

    out = run_loop(
        run, state, steps=steps, chunk=chunk, tol=tol, progress=progress,
        desc=f"fit {H}x{W}x{C} R=({rc},{rs})", lr_desc=_lr_desc(lr_v), constants={"caps": caps},
        checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume, fingerprint=fingerprint,
    )
    A, P = to_host(out.state.A), to_host(out.state.P)  # replicated: every process gets them
    return FitResult(Factors(jax.device_put(A), jax.device_put(P), H, W), out.losses, out.n_steps, out.converged,
                     out.seconds, lr_info(out.state))


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
    tol: float = 0.0,
    chunk: int = 100,
    progress: bool = False,
    shard: bool = True,
    checkpoint: str | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
) -> FitResult:
    """The original's stochastic mode: each step draws a fresh batch
    ``sample_fn(key, batch_size)`` (``[B, H, W, C]``) inside the jitted loop.

    A host-driven loop like :func:`fit` (same ``tol``, progress, divergence checks and
    checkpoints); step ``t``'s batch depends only on ``key`` and ``t``, so a resumed fit draws
    the same batches. ``tol`` compares the mean loss of successive chunks (each step's loss is on
    its own batch). ``sample_fn`` must be jittable and hashable (a plain function). Large
    constants (generator weights) should come in through ``sample_args``: then it is called as
    ``sample_fn(sample_args, key, batch_size)``. Memory is independent of the total number of
    samples seen. With ``lr="auto"`` each step's sizes are chosen on that step's batch.

    Several devices (``shard=True``, the default, with ``D = len(jax.devices()) > 1``, also
    across processes after ``jax.distributed.initialize()``): ``batch_size`` is the global batch
    and must be a multiple of ``D``. Each device draws its own share, and nothing else: wherever
    one device would draw ``sample_fn(k, batch_size)`` (each step, with ``k`` the step's key
    ``fold_in(k_run, t)``; the HOSVD batches; the batch that sets the ``lr="auto"`` caps),
    device ``d`` (its place in ``jax.devices()``) draws ``sample_fn(fold_in(k, d), batch_size // D)``.
    The factors are replicated; the summed gradients and losses are all-reduced, so each step is
    the step on the union of the shares. The result is therefore that of a one-device fit
    (``shard=False``, the same ``key``) with the sampler
    ``lambda k, n: concatenate([sample_fn(fold_in(k, d), n // D) for d in range(D)])``, up to
    float round-off from the order of the sums. Every process makes the same call (same
    ``sample_fn``, ``sample_args``, ``key``); it draws only the shares of its own devices.
    ``shard=False`` runs on one device and draws ``sample_fn(k, batch_size)`` there (with one
    device the two are the same). Checkpoints need a single process.
    """
    steps = checks.steps(steps)
    batch_size = checks.integer(batch_size, "batch_size")
    lr_v = checks.lr(lr)
    tol = checks.tol(tol)
    key = checks.key(key)
    chunk = checks.integer(chunk, "chunk")
    hosvd_batches = checks.integer(hosvd_batches, "hosvd_batches")
    mesh = _data_mesh(shard)
    D = 1 if mesh is None else mesh.size
    if batch_size % D:
        raise ConfigError(
            f"batch_size {batch_size} is not a multiple of the {D} devices the fit is sharded over (each draws "
            f"batch_size / {D} samples per step); give a multiple of {D}, or shard=False to run on one device"
        )
    k_init, k_parts, k_run = jax.random.split(key, 3)
    _, H, W, C = _probe(sample_fn, sample_args, k_init, batch_size // D)
    rc, rs = checks.ranks(ranks, C, H * W)
    if mesh is not None:
        _same_call_everywhere("pj.fit_stream", {
            "batch": [batch_size, H, W, C], "ranks": [rc, rs], "steps": steps, "lr": -1.0 if lr_v is None else lr_v,
            "tol": tol, "chunk": chunk, "hosvd_batches": hosvd_batches,
            "key": _key_digest(key)})
    if mesh is not None:  # every process holds the same key and sample_args: replicate them
        k_init, k_run, sample_args = _put_replicated((k_init, k_run, sample_args), mesh)
    A, P = _init_factors(
        init, (1, H, W, C), (rc, rs), jnp.float32,
        lambda: _hosvd_streamed(sample_fn, rc, k_init, hosvd_batches, batch_size, sample_args, mesh), k_parts)
    if mesh is not None:
        A, P = _put_replicated((A, P), mesh)
    auto = lr_v is None
    if auto:
        Zt0, bad = _first_batch(sample_args, k_init, sample_fn=sample_fn, batch_size=batch_size, mesh=mesh)
        if to_host(bad):
            raise FeatureError("sample_fn produced NaN/inf features; check the generator at this layer")
        caps = tuple(jnp.asarray(c, jnp.float32) for c in _auto_caps(Zt0, A))
        del Zt0
    else:
        caps = (jnp.float32(lr_v),) * 2
        if mesh is not None:
            caps = _put_replicated(caps, mesh)
    state = StreamState(A, P, caps[0] + 0, caps[1] + 0)  # copies: the state is donated

    def run(state, done, n, constants):
        return _run_stream_chunk(state, k_run, done, n, constants["caps"], sample_args, sample_fn=sample_fn,
                                 batch_size=batch_size, auto=auto, chunk=chunk, mesh=mesh)

    def fingerprint():
        fp = {"kind": "fit_stream", "features": [batch_size, H, W, C], "ranks": [rc, rs], "lr": _lr_desc(lr_v),
              "key": to_host(jax.random.key_data(key)).ravel().tolist()}
        if D > 1:  # the batches depend on the device count
            fp["devices"] = D
        return fp

    out = run_loop(
        run, state, steps=steps, chunk=chunk, tol=tol, progress=progress, stochastic=True,
        desc=f"fit_stream {H}x{W}x{C} R=({rc},{rs})", lr_desc=_lr_desc(lr_v), constants={"caps": caps},
        checkpoint=checkpoint, checkpoint_every=checkpoint_every, resume=resume, fingerprint=fingerprint,
    )
    s = out.state
    A, P = to_host(s.A), to_host(s.P)  # replicated: every process gets them
    lr_info = ({"parts": float(to_host(s.eta_parts)), "appearance": float(to_host(s.eta_appearance))} if auto
               else {"parts": lr_v, "appearance": lr_v})
    return FitResult(Factors(jax.device_put(A), jax.device_put(P), H, W), out.losses, out.n_steps, out.converged,
                     out.seconds, lr_info)
