"""Argument checks shared by the public functions: one place, one wording.

Two kinds, kept apart so the public per-sample functions compose with ``jit``, ``vmap`` and
``grad``:

- **static** checks (shapes, ranks, dtypes, indices, settings) run on Python values and array
  shapes, always, also while tracing;
- **value** checks (finite inputs) need the numbers: they run on concrete arrays only. Inside a
  trace they are skipped, unless the function runs under :func:`checked`, which turns them into
  ``jax.experimental.checkify`` checks that the caller throws after the call.
"""

from __future__ import annotations

import contextvars
import math
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from .errors import ConfigError, FeatureError, RankError

_TRACED_CHECKS = contextvars.ContextVar("panda_jax_traced_checks", default=False)


def is_traced(x) -> bool:
    """Is ``x`` (or any leaf of it) a tracer, i.e. are we inside ``jit``/``vmap``/``grad``?"""
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(x))


def checked(fn):
    """``fn`` with its value checks active under tracing: returns ``checkify``'s ``(err, out)``.

    Example::

        err, out = jax.jit(pj.checked(lambda z: pj.edit(z, F, part=1, appearance=2, alpha=a)))(Z)
        err.throw()   # raises if Z held NaN/inf
    """
    from jax.experimental import checkify

    def inner(*args, **kwargs):
        token = _TRACED_CHECKS.set(True)
        try:
            return fn(*args, **kwargs)
        finally:
            _TRACED_CHECKS.reset(token)

    return checkify.checkify(inner, errors=checkify.user_checks)


def require_finite(x, message: str, error=FeatureError) -> None:
    """Raise ``error(message)`` if the concrete array(s) ``x`` (a pytree) hold NaN/inf; under
    :func:`checked` a traced ``x`` becomes a checkify check; otherwise a traced ``x`` is not
    checked. ``{bad}`` in ``message`` is replaced by the count of bad values."""
    leaves = jax.tree_util.tree_leaves(x)
    if is_traced(leaves):
        if _TRACED_CHECKS.get():
            from jax.experimental import checkify

            ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in leaves]))
            checkify.check(ok, message.replace("{bad} ", "some "))
        return
    bad = 0
    for leaf in leaves:
        a = np.asarray(leaf)
        if a.dtype.kind in "fc":
            bad += int(a.size - np.count_nonzero(np.isfinite(a)))
    if bad:
        raise error(message.replace("{bad}", str(bad)))


# ---- features -----------------------------------------------------------------------------


def features(x, name: str = "features", *, single: bool = False):
    """``x`` as a float array ``[N, H, W, C]`` (or ``[H, W, C]`` when ``single`` allows one
    sample); raises :class:`FeatureError` naming the problem. NaN/inf is refused on concrete
    input (see :func:`require_finite`)."""
    shape = np.shape(x)
    ok = (3, 4) if single else (4,)
    if len(shape) not in ok:
        want = "[N, H, W, C] (or one sample [H, W, C])" if single else "[N, H, W, C]"
        raise FeatureError(
            f"{name} must be a {' or '.join(f'{d}-D' for d in ok)} array {want} (NHWC feature maps); got shape "
            f"{shape}. Add a batch axis for one sample, or transpose NCHW maps with .transpose(0, 2, 3, 1)"
        )
    if min(shape) < 1:
        raise FeatureError(f"{name} has an empty axis: shape {shape}")
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise FeatureError(f"{name} must be floating point; got dtype {x.dtype}")
    if x.dtype != jnp.float32 and x.dtype != jnp.float64:
        x = x.astype(jnp.float32)
    require_finite(
        x, f"{name} contain {{bad}} NaN/inf values; check the generator output at this layer "
           "(or drop the samples with jnp.isfinite(features).all(axis=(1, 2, 3)))")
    return x


# ---- numbers and settings -----------------------------------------------------------------


def integer(v, name: str, *, low: int = 1, high: int | None = None, error=ConfigError) -> int:
    """``v`` as a Python int in ``low..high``; a bool, a float or a string is refused."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        if isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "iu":
            v = int(v)
        else:
            raise error(f"{name} must be an integer; got {v!r}")
    v = int(v)
    if v < low or (high is not None and v > high):
        if low == 1 and high is None:
            raise error(f"{name} must be a positive integer; got {v}")
        rng = f"{low}..{high}" if high is not None else f">= {low}"
        raise error(f"{name} must be in {rng}; got {v}")
    return v


def real(v, name: str, *, positive: bool = False, nonnegative: bool = False, error=ConfigError):
    """``v`` as a finite float (a traced scalar passes unchecked in value); strings refused."""
    if is_traced(v):
        if np.ndim(v) != 0:
            raise error(f"{name} must be a scalar; got shape {np.shape(v)}")
        return v
    if isinstance(v, bool) or isinstance(v, (str, bytes)) or v is None:
        raise error(f"{name} must be a finite number; got {v!r}")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise error(f"{name} must be a finite number; got {v!r}") from None
    if not math.isfinite(f):
        raise error(f"{name} must be a finite number; got {v!r}")
    if positive and not f > 0:
        raise error(f"{name} must be positive; got {v!r}")
    if nonnegative and f < 0:
        raise error(f"{name} must be >= 0; got {v!r}")
    return f


def ranks(r, C: int, S: int) -> tuple[int, int]:
    """``(R_C, R_S)`` as two positive integers with ``R_C <= C`` and ``R_S <= S``."""
    try:
        rc, rs = r
    except (TypeError, ValueError):
        raise RankError(f"ranks must be a pair (R_C, R_S) of positive integers; got {r!r}") from None
    rc = integer(rc, "R_C (ranks[0])", error=RankError)
    rs = integer(rs, "R_S (ranks[1])", error=RankError)
    if rc > C:
        raise RankError(f"R_C = {rc} is larger than the {C} channels of the features; use R_C <= {C}")
    if rs > S:
        raise RankError(f"R_S = {rs} is larger than the {S} spatial positions of the features; use R_S <= {S}")
    return rc, rs


def steps(v) -> int:
    return integer(v, "steps")


def lr(v):
    """``None`` for ``"auto"``, else the positive finite float."""
    if isinstance(v, str):
        if v != "auto":
            raise ConfigError(f"lr must be 'auto' or a positive float; got {v!r}")
        return None
    return real(v, "lr ('auto' or a positive float)", positive=True)


def tol(v) -> float:
    return real(v, "tol (a relative loss decrease, e.g. 1e-4; 0 runs every step)", nonnegative=True)


def key(k):
    """A ``jax.random`` key (new-style typed key or legacy ``uint32[2]``); ``None`` -> ``key(0)``."""
    if k is None:
        return jax.random.key(0)
    dt = getattr(k, "dtype", None)
    if dt is not None and (jnp.issubdtype(dt, jax.dtypes.prng_key) or (dt == jnp.uint32 and np.shape(k) == (2,))):
        return k
    raise ConfigError(f"key must be a jax.random key such as jax.random.key(0); got {k!r}")


def index(v, n: int, what: str) -> int:
    """One index into ``n`` items (a static Python/numpy integer)."""
    if isinstance(v, bool) or not isinstance(v, (numbers.Integral, np.integer)):
        raise ConfigError(f"{what} index must be an integer; got {v!r}")
    i = int(v)
    if not 0 <= i < n:
        raise ConfigError(f"{what} index {i} is out of range; the factors have {n} (use 0..{n - 1})")
    return i


def indices(v, n: int, what: str) -> list[int]:
    """An index or a list of indices into ``n`` items."""
    if isinstance(v, (list, tuple, np.ndarray)):
        items = list(np.asarray(v).ravel()) if isinstance(v, np.ndarray) else list(v)
        if not items:
            raise ConfigError(f"{what} must name at least one index; got {v!r}")
        return [index(i, n, what) for i in items]
    return [index(v, n, what)]
