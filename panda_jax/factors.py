"""The :class:`Factors` pytree, its single-file format, and the original's ``Uc``/``Us`` ``.npy`` pairs.

Layout follows the original PandA code so its published factors load without transposes:
appearance ``A`` is ``[C, R_C]`` and parts ``P`` is ``[S, R_S]`` with the spatial index
``s = h * W + w``.
"""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from . import _npy, checks
from ._io import atomic_write
from .errors import FactorsError

FILE_VERSION = 1


@jax.tree_util.register_pytree_node_class
class Factors:
    """Appearances ``A [C, R_C]`` and non-negative parts ``P [S, R_S]`` of an ``H x W`` layer.

    A pytree: ``appearance`` and ``parts`` are leaves; ``height``, ``width`` and ``meta`` (a
    dict of plain JSON values such as ``model`` and ``layer``) are static.
    """

    def __init__(self, appearance, parts, height: int, width: int, meta: dict | None = None):
        self.appearance = appearance
        self.parts = parts
        self.height = checks.integer(height, "height (of the layer)", error=FactorsError)
        self.width = checks.integer(width, "width (of the layer)", error=FactorsError)
        if meta is not None and not isinstance(meta, dict):
            raise FactorsError(f"meta must be a dict of plain JSON values; got a {type(meta).__name__}")
        try:
            self._meta = json.dumps(meta or {}, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise FactorsError(f"meta must hold plain, finite JSON values (str, int, float, list, dict); {e}") from None

    # pytree protocol
    def tree_flatten(self):
        return (self.appearance, self.parts), (self.height, self.width, self._meta)

    @classmethod
    def tree_unflatten(cls, aux, children):
        obj = object.__new__(cls)
        obj.appearance, obj.parts = children
        obj.height, obj.width, obj._meta = aux
        return obj

    @property
    def meta(self) -> dict:
        return json.loads(self._meta)

    def with_meta(self, **kw) -> "Factors":
        m = self.meta
        m.update(kw)
        return Factors(self.appearance, self.parts, self.height, self.width, m)

    @property
    def channels(self) -> int:
        return int(np.shape(self.appearance)[0])

    @property
    def rank_c(self) -> int:
        return int(np.shape(self.appearance)[1])

    @property
    def rank_s(self) -> int:
        return int(np.shape(self.parts)[1])

    @property
    def ranks(self) -> tuple[int, int]:
        return self.rank_c, self.rank_s

    def part_maps(self):
        """Parts as maps ``[R_S, H, W]``."""
        return jnp.asarray(self.parts).T.reshape(self.rank_s, self.height, self.width)

    def __repr__(self):
        return (
            f"Factors(C={self.channels}, R_C={self.rank_c}, S={self.height}x{self.width}, "
            f"R_S={self.rank_s}, meta={self.meta})"
        )


def check_factors(factors: Factors, features_shape: tuple | None = None) -> None:
    """Raise :class:`FactorsError` unless the factors are consistent (and fit the features).

    Shapes are checked always; NaN/inf only on concrete factors (not while tracing)."""
    if not isinstance(factors, Factors):
        raise FactorsError(
            f"factors must be a panda_jax.Factors (from fit, load_factors or load_original); got {type(factors).__name__}"
        )
    A, P = np.shape(factors.appearance), np.shape(factors.parts)
    if len(A) != 2 or len(P) != 2:
        raise FactorsError(f"factors must be matrices: appearance [C, R_C] and parts [S, R_S]; got {A} and {P}")
    if P[0] != factors.height * factors.width:
        raise FactorsError(
            f"parts have {P[0]} rows but the layer is {factors.height}x{factors.width} "
            f"= {factors.height * factors.width} positions; give the right height and width"
        )
    if A[0] < 1 or A[1] < 1 or P[1] < 1:
        raise FactorsError(f"factors have an empty axis: appearance {A}, parts {P}")
    checks.require_finite((factors.appearance, factors.parts),
                          "the factors hold NaN/inf values; fit again or load finite factors", error=FactorsError)
    if features_shape is not None:
        _, H, W, C = features_shape
        if (H, W, C) != (factors.height, factors.width, A[0]):
            raise FactorsError(
                f"factors are for {factors.height}x{factors.width}x{A[0]} feature maps but the features are "
                f"{H}x{W}x{C}; use factors fitted at this layer (meta: {factors.meta})"
            )


def save_factors(path: str, factors: Factors) -> str:
    """Write the factors and their metadata to one ``.npz`` file (atomically)."""
    check_factors(factors)
    if not path.endswith(".npz"):
        path = path + ".npz"

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(
                f,
                appearance=np.asarray(factors.appearance, np.float32),
                parts=np.asarray(factors.parts, np.float32),
                header=np.array(
                    json.dumps(
                        {
                            "format": "panda-jax factors",
                            "version": FILE_VERSION,
                            "height": factors.height,
                            "width": factors.width,
                            "meta": factors.meta,
                        }
                    )
                ),
            )

    atomic_write(path, write)
    return path


def load_factors(path: str) -> Factors:
    """Read factors written by :func:`save_factors` (nothing in the file is executed)."""
    if not os.path.isfile(path):
        raise FactorsError(f"factors file {path!r} does not exist; fit first (panda-jax fit ... --out FILE)")
    what = f"{path!r} is not a panda-jax factors file"
    try:
        _npy.check_sizes(path)  # declared shapes against the bytes present, before np.load allocates
        with np.load(path, allow_pickle=False) as z:
            if not {"header", "appearance", "parts"} <= set(z.files):
                raise FactorsError(f"{what} (it holds {sorted(z.files)[:6]}); for the original's Uc/Us .npy pair "
                                   "use load_original(uc, us)")
            header = json.loads(str(z["header"]))
            A, P = z["appearance"], z["parts"]
    except FactorsError:
        raise
    except Exception as e:
        raise FactorsError(
            f"{what} ({type(e).__name__}: {str(e)[:200]}); for the original's Uc/Us .npy pair use load_original(uc, us)"
        ) from None
    if not isinstance(header, dict) or header.get("format") != "panda-jax factors":
        fmt = header.get("format") if isinstance(header, dict) else f"a JSON {type(header).__name__}"
        raise FactorsError(f"{what} (header format {fmt!r})")
    if not isinstance(header.get("version"), int) or header["version"] > FILE_VERSION:
        raise FactorsError(f"{path!r} has factors file version {header.get('version')!r}; this panda-jax reads "
                           f"up to {FILE_VERSION}: upgrade panda-jax")
    for name, arr in (("appearance", A), ("parts", P)):
        if not isinstance(arr, np.ndarray):  # a member that is not an .npy array comes back as bytes
            raise FactorsError(f"{path!r}: {name} is not an array (the member is damaged); fit again")
        if arr.ndim != 2 or arr.dtype.kind != "f":
            raise FactorsError(f"{path!r}: {name} must be a 2-D float array; got shape {arr.shape}, dtype {arr.dtype}")
    # Native float32 (a big-endian or float16/64 array is a float array JAX cannot take as is).
    A, P = A.astype(np.float32), P.astype(np.float32)
    if A.size == 0 or P.size == 0:  # checked in numpy: JAX compiles for a while on a [10**9, 0] array
        raise FactorsError(f"{path!r} holds empty factors (appearance {A.shape}, parts {P.shape}); the file is damaged")
    if "height" not in header or "width" not in header:
        raise FactorsError(f"{path!r}: the header does not give the layer's height and width; the file is damaged")
    meta = header.get("meta", {})
    if not isinstance(meta, dict):
        raise FactorsError(f"{path!r}: the header's meta is a {type(meta).__name__}, not an object; the file is damaged")
    f = Factors(jnp.asarray(A), jnp.asarray(P), header["height"], header["width"], meta)
    check_factors(f)
    return f


_ORIG = re.compile(r"^(Uc|Us)-name_(?P<model>.+)-layer_(?P<layer>-?\d+)-rank_(?P<rank>\d+)\.npy$")


def safe_name(name: str) -> str:
    """``name`` as one plain file-name component: no separators, no leading dots, printable
    ASCII only (a model name from a file's metadata must never steer a write elsewhere)."""
    s = re.sub(r"[^A-Za-z0-9._+=-]", "_", name).lstrip(".")[:120]
    return s or "model"


def original_names(model: str, layer: int, ranks: tuple[int, int]) -> tuple[str, str]:
    """The original's file names ``(Uc-..., Us-...)`` for ``model`` at ``layer``."""
    return (
        f"Uc-name_{model}-layer_{layer}-rank_{ranks[0]}.npy",
        f"Us-name_{model}-layer_{layer}-rank_{ranks[1]}.npy",
    )


def _load_npy(path: str, what: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise FactorsError(f"{what} file {path!r} does not exist")
    try:
        _npy.check_sizes(path)
        arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise FactorsError(f"{path!r} is not a readable .npy array ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(arr, np.ndarray):
        raise FactorsError(f"{what} {path!r} is not a single .npy array (an .npz archive?); give the .npy file")
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating):
        raise FactorsError(f"{what} {path!r} must be a 2-D float array; got shape {arr.shape}, dtype {arr.dtype}")
    return arr.astype(np.float32)


def load_original(uc: str, us: str, height: int | None = None, width: int | None = None) -> Factors:
    """Factors from the original's ``Uc-...npy`` (``[C, R_C]``) and ``Us-...npy`` (``[S, R_S]``).

    The layer is square in every original model, so ``height``/``width`` default to ``sqrt(S)``.
    Model name and layer are read from the file names when they follow the original pattern.
    """
    A, P = _load_npy(uc, "appearance (Uc)"), _load_npy(us, "parts (Us)")
    S = P.shape[0]
    if height is None and width is None:
        r = math.isqrt(S)
        if r * r != S:
            raise FactorsError(f"parts have {S} positions, not a square layer; pass height and width")
        height = width = r
    else:
        if height is not None:
            height = checks.integer(height, "height", error=FactorsError)
        if width is not None:
            width = checks.integer(width, "width", error=FactorsError)
        if height is None:
            height = S // width
        elif width is None:
            width = S // height
    if A.shape[0] < 1 or A.shape[1] < 1 or S < 1 or P.shape[1] < 1:
        raise FactorsError(f"empty factors: Uc {A.shape}, Us {P.shape}")
    meta: dict[str, Any] = {}
    m = _ORIG.match(os.path.basename(uc))
    if m:
        meta = {"model": m["model"], "layer": int(m["layer"])}
    f = Factors(jnp.asarray(A), jnp.asarray(P), int(height), int(width), meta)
    check_factors(f)
    return f


def save_original(out_dir: str, factors: Factors, model: str | None = None, layer: int | None = None) -> tuple[str, str]:
    """Write the original's ``Uc``/``Us`` ``.npy`` pair into ``out_dir``; returns the two paths."""
    check_factors(factors)
    meta = factors.meta
    model = model if model is not None else meta.get("model", "model")
    layer = layer if layer is not None else meta.get("layer", 0)
    layer = checks.integer(layer, "layer", low=-(1 << 30), error=FactorsError)
    uc_name, us_name = original_names(safe_name(str(model)), layer, factors.ranks)
    paths = (os.path.join(out_dir, uc_name), os.path.join(out_dir, us_name))
    for path, arr in zip(paths, (factors.appearance, factors.parts)):
        def write(tmp, arr=arr):
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(arr, np.float32))

        atomic_write(path, write)
    return paths
