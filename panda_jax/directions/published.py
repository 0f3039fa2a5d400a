"""Latent directions published by other methods, read safely into one structure.

Formats (read with ``np.load(..., allow_pickle=False)``: nothing in a file is executed, and a
file holding pickled objects is refused):

* ``.npy``, a bare float array: ReSeFa's released directions and the ``[w_dim, w_dim]`` rows
  its ``compute_direction.py`` saves (``np.save``, strongest first), InterFaceGAN/SeFa-style
  ``[1, D]`` boundaries. ``[D]`` or ``[K, D]``; ``[K, L, D]`` with ``L > 1`` is a per-row w+
  offset. The file does not say its space: the generator's editing space is used (w where it
  has one, as ReSeFa's files are), or ``space=`` given by the user.
* GANSpace ``.npz`` (``decomposition.py``'s ``np.savez_compressed``): ``lat_comp``
  ``[K, *latent_shape]`` (unit rows), ``lat_mean``, ``lat_stdev`` ``[K]``, ``act_comp``,
  ``act_mean``, ``act_stdev``, ``var_ratio`` ``[K]``, ``random_stdevs``. Its edit is
  ``latent + sigma * lat_stdev[k] * lat_comp[k]``, so ``stdev`` is kept and edits are in
  standard deviations. Its space is W when GANSpace ran with ``--use_w``: the name it gives the
  file ends in ``_w`` (or ``_w_seed<N>``), and ``lat_stdev`` is measured (it is all ones in Z).
* SeFa ``.npz``: SeFa (``genforce/sefa``) saves nothing; its ``factorize_weight`` returns
  ``(layers, boundaries, values)``, and this is that tuple under those names
  (``np.savez(f, layers=layers, boundaries=boundaries, values=values)``): ``boundaries``
  ``[K, D]`` rows, ``values`` ``[K]`` eigenvalues, ``layers`` the w+ rows SeFa moves (for PGGAN
  it returns ``[0]``, the factorised layer, and edits z: ignored where there is no w).

The original PandA's ``Uc``/``Us`` pairs are factors, not latent directions: they are read by
:func:`panda_jax.load_original` and refused here with that pointer.
"""

from __future__ import annotations

import dataclasses
import os
import re

import numpy as np

from .. import _npy
from ..errors import DirectionsError

SPACES = ("z", "w", "w+")
_GANSPACE_W = re.compile(r"_w(_seed\d+)?\.npz$")
_PANDA_ORIGINAL = re.compile(r"^(Uc|Us)-name_.+-layer_-?\d+-rank_\d+\.npy$")
_NPY_MAGIC, _ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


@dataclasses.dataclass(frozen=True, eq=False)
class LatentDirections:
    """Directions read from a file, as stored (not renormalised).

    ``directions`` ``[K, D]`` float32. ``space``: ``"z"``, ``"w"`` (one w offset, added to the
    w+ rows ``layers``), ``"w+"`` (``D = num_layers * w_dim``, one offset per row) or ``None``
    when the file does not say. ``layers``: the w+ rows the file says to move, or ``None``.
    ``mean`` ``[D]`` and ``stdev`` ``[K]``: GANSpace's latent mean and the standard deviation along
    each component (edits are then ``alpha * stdev[k]`` along ``directions[k]``). ``values``
    ``[K]``: the method's score (SeFa's eigenvalues, GANSpace's explained variance ratios).
    """

    directions: np.ndarray
    space: str | None = None
    layers: tuple[int, ...] | None = None
    mean: np.ndarray | None = None
    stdev: np.ndarray | None = None
    values: np.ndarray | None = None
    format: str = "npy"
    num_layers: int | None = None

    def __len__(self) -> int:
        return int(self.directions.shape[0])

    @property
    def dim(self) -> int:
        return int(self.directions.shape[1])

    def check_component(self, k) -> int:
        """``k`` as a row index of :attr:`directions`, or a DirectionsError."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= k < len(self):
            raise DirectionsError(
                f"component {k!r} is not in the file: it holds {len(self)} direction"
                f"{'s' if len(self) != 1 else ''} (use 0..{len(self) - 1})"
            )
        return int(k)

    def step(self, k: int) -> float:
        """The latent distance of ``alpha = 1`` along component ``k`` (GANSpace: its stdev)."""
        return 1.0 if self.stdev is None else float(self.stdev[self.check_component(k)])


# ---- reading ------------------------------------------------------------------------------


def _numbers(arr, what: str, path: str) -> np.ndarray:
    """``arr`` as finite float32, or a DirectionsError naming ``what``."""
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        kind = f"dtype {arr.dtype}" if isinstance(arr, np.ndarray) else type(arr).__name__
        fix = " (take the real part, np.real, as ReSeFa and SeFa do)" if getattr(arr, "dtype", None) is not None \
            and arr.dtype.kind == "c" else ""
        raise DirectionsError(f"{path!r}: {what} must hold real numbers, got {kind}{fix}")
    with np.errstate(over="ignore"):
        out = arr.astype(np.float32)
    bad = int(out.size - np.count_nonzero(np.isfinite(out)))
    if bad:
        raise DirectionsError(f"{path!r}: {what} holds {bad} NaN/inf values (or values beyond float32); "
                              "recompute or re-save the directions")
    return out


def _rows(arr: np.ndarray, what: str, path: str) -> tuple[np.ndarray, int | None]:
    """``[K, D]`` from ``[D]``, ``[K, D]`` or ``[K, L, D]`` (then also ``L``; ``L = 1`` dropped)."""
    if arr.size == 0:  # before reshaping: [0, 10**9, 3] cannot be reshaped to [0, -1]
        raise DirectionsError(f"{path!r}: {what} is empty (shape {arr.shape})")
    if arr.ndim == 1:
        arr = arr[None]
    layers = None
    if arr.ndim == 3:
        if arr.shape[1] > 1:
            layers = int(arr.shape[1])
        arr = arr.reshape(arr.shape[0], -1)
    if arr.ndim != 2:
        raise DirectionsError(f"{path!r}: {what} has shape {arr.shape}; expected [D], [K, D] or [K, L, D] "
                              "(K directions of a D-dimensional latent)")
    if 0 in arr.shape:
        raise DirectionsError(f"{path!r}: {what} is empty (shape {arr.shape})")
    return arr, layers


def _per_direction(arr, k: int, what: str, path: str) -> np.ndarray:
    arr = _numbers(arr, what, path).reshape(-1)
    if arr.shape != (k,):
        raise DirectionsError(f"{path!r}: {what} has {arr.size} values for {k} directions; expected one per direction")
    return arr


def _open(path: str):
    """The loaded ``.npy`` array or ``.npz`` archive, refusing pickles and anything else."""
    if not isinstance(path, (str, os.PathLike)):
        raise DirectionsError(f"a directions file must be a path, got {type(path).__name__}")
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DirectionsError(f"directions file {path!r} does not exist")
    if _PANDA_ORIGINAL.match(os.path.basename(path)):
        raise DirectionsError(
            f"{path!r} is one of the original PandA's Uc/Us factor files (feature-space appearances and parts, "
            "not latent directions); read the pair with panda_jax.load_original(uc, us), save it with "
            "panda_jax.save_factors and give that file as FACTORS to `panda-jax edit`"
        )
    with open(path, "rb") as f:
        head = f.read(8)
    if not (head.startswith(_NPY_MAGIC) or head.startswith(_ZIP_MAGIC)):
        pickled = head[:1] == b"\x80" or head[:1] in (b"(", b"]", b"}")
        raise DirectionsError(
            f"{path!r} is " + ("a Python pickle, which is refused (loading it could run code)" if pickled
                               else "neither a .npy array nor a .npz archive")
            + "; save the directions with np.save / np.savez (GANSpace's interactive.py writes named edits "
            "as pickles: save their 'lat_comp' with np.save)"
        )
    try:
        _npy.check_sizes(path)  # declared shapes against the bytes present, before np.load allocates
        return np.load(path, allow_pickle=False), path
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise DirectionsError(f"{path!r} holds Python objects (an object array), which are refused "
                                  "(loading them could run code); save plain float arrays") from None
        raise DirectionsError(f"{path!r} is not a readable .npy/.npz file ({str(e)[:200]})") from None
    except Exception as e:  # noqa: BLE001 - zipfile, numpy's header parser and tokenize raise many kinds
        raise DirectionsError(f"{path!r} is not a readable .npy/.npz file ({type(e).__name__}: {str(e)[:200]}); "
                              "the file is damaged or truncated") from None


def _get(z, key: str, path: str):
    try:
        return z[key]
    except ValueError as e:
        if "pickle" in str(e).lower() or "object" in str(e).lower():
            raise DirectionsError(f"{path!r}: {key!r} holds Python objects (an object array), which are refused "
                                  "(loading them could run code); save plain float arrays") from None
        raise DirectionsError(f"{path!r}: {key!r} is not readable ({str(e)[:200]})") from None
    except Exception as e:  # noqa: BLE001 - zipfile, numpy's header parser and tokenize raise many kinds
        raise DirectionsError(f"{path!r}: {key!r} is not readable ({type(e).__name__}); the file is damaged") from None


def _ganspace(z, path: str) -> LatentDirections:
    comp, L = _rows(_numbers(_get(z, "lat_comp", path), "lat_comp", path), "lat_comp", path)
    K, D = comp.shape
    mean = stdev = values = None
    if "lat_mean" in z.files:
        mean = _numbers(_get(z, "lat_mean", path), "lat_mean", path).reshape(-1)
        if mean.size != D:
            raise DirectionsError(f"{path!r}: lat_mean has {mean.size} values but lat_comp's directions have {D}")
    if "lat_stdev" in z.files:
        stdev = _per_direction(_get(z, "lat_stdev", path), K, "lat_stdev", path)
        if np.any(stdev <= 0):
            raise DirectionsError(f"{path!r}: lat_stdev has values <= 0; standard deviations are positive")
    if "var_ratio" in z.files:
        values = _per_direction(_get(z, "var_ratio", path), K, "var_ratio", path)
    if L is not None:
        space = "w+"
    elif _GANSPACE_W.search(os.path.basename(path)) or (stdev is not None and not np.all(stdev == 1.0)):
        space = "w"  # --use_w: GANSpace names the file *_w.npz and measures lat_stdev (ones in Z)
    else:
        space = "z"
    return LatentDirections(comp, space, None, mean, stdev, values, "ganspace", L)


def _sefa(z, path: str) -> LatentDirections:
    dirs, L = _rows(_numbers(_get(z, "boundaries", path), "boundaries", path), "boundaries", path)
    values = _per_direction(_get(z, "values", path), len(dirs), "values", path) if "values" in z.files else None
    layers = None
    if "layers" in z.files:
        raw = _get(z, "layers", path)
        if not isinstance(raw, np.ndarray) or raw.dtype.kind not in "iu" or raw.ndim > 1 or raw.size == 0:
            raise DirectionsError(f"{path!r}: layers must be a non-empty list of integer w+ rows (SeFa's "
                                  f"layers_to_interpret), got {getattr(raw, 'dtype', type(raw).__name__)} "
                                  f"of shape {getattr(raw, 'shape', '?')}")
        if np.any(raw < 0):
            raise DirectionsError(f"{path!r}: layers {raw.tolist()} has negative rows")
        layers = tuple(sorted({int(i) for i in raw.reshape(-1)}))
    return LatentDirections(dirs, "w+" if L else None, layers, None, None, values, "sefa", L)


def load_directions(path) -> LatentDirections:
    """The directions in ``path`` (a ``.npy`` array, a GANSpace or SeFa ``.npz``; see the module
    docstring), every array checked: real, finite, consistent shapes. A DirectionsError otherwise."""
    obj, path = _open(path)
    if isinstance(obj, np.ndarray):
        dirs, L = _rows(_numbers(obj, "the array", path), "the array", path)
        return LatentDirections(dirs, "w+" if L else None, None, format="npy", num_layers=L)
    with obj as z:
        keys = set(z.files)
        if {"header", "appearance", "parts"} <= keys:
            raise DirectionsError(f"{path!r} is a panda-jax factors file, not latent directions; give it as "
                                  "FACTORS to `panda-jax edit` with --part and --appearance")
        if "lat_comp" in keys:
            return _ganspace(z, path)
        if "boundaries" in keys:
            return _sefa(z, path)
    shown = ", ".join(sorted(keys)[:8]) or "nothing"
    raise DirectionsError(
        f"{path!r} holds {shown}: not a known directions archive. Expected GANSpace components "
        "('lat_comp', optional 'lat_mean', 'lat_stdev', 'var_ratio') or SeFa's factorisation "
        "('boundaries', optional 'values', 'layers'); a single array can be a .npy file"
    )


# ---- fitting a generator --------------------------------------------------------------------


def fit_directions(d: LatentDirections, *, z_dim: int, w_dim: int | None = None, num_ws: int | None = None,
                   space: str | None = None, layers=None) -> LatentDirections:
    """``d`` checked against a generator's latent sizes, with its space and w+ rows settled.

    ``w_dim``/``num_ws`` are ``None`` for a generator without W. ``space`` (``"z"``, ``"w"``,
    ``"w+"``) overrides the file's; a file that does not say gets the generator's editing space
    (w where it has one, else z). ``layers`` (w+ rows) overrides the file's; for ``"w"`` the default
    is every row. For ``"z"`` the file's rows are ignored (SeFa's ``[0]`` for PGGAN)."""
    if space is not None and space not in SPACES:
        raise DirectionsError(f"space {space!r} is not one of {', '.join(SPACES)}")
    has_w = w_dim is not None
    given = space is not None
    space = space or d.space or ("w" if has_w else "z")
    if space != "z" and not has_w:
        raise DirectionsError(
            f"the directions live in {space} (as {'given' if given else 'the file says'}), but this generator has "
            f"no W space; use a StyleGAN-family model, or --space z if they are z directions of {z_dim} values"
        )
    want = {"z": z_dim, "w": w_dim, "w+": (num_ws or 0) * (w_dim or 0)}[space]
    if d.dim != want:
        what = {"z": f"z of {z_dim}", "w": f"w of {w_dim}", "w+": f"w+ of {num_ws} x {w_dim} = {want}"}[space]
        hint = ""
        if space != "z" and d.dim == z_dim:
            hint = "; they have z's size: pass --space z if they are z directions"
        elif has_w and space == "z" and d.dim == w_dim:
            hint = "; they have w's size: pass --space w if they are w directions"
        raise DirectionsError(f"the directions have {d.dim} values each ({len(d)} x {d.dim}) but this generator's "
                              f"{what} values{hint}. Use directions found on this model")
    if space == "w+" and d.num_layers not in (None, num_ws):
        raise DirectionsError(f"the directions have {d.num_layers} w+ rows; this generator has {num_ws}")
    rows = None
    if space == "w":
        rows = tuple(layers) if layers is not None else d.layers
        if rows is None:
            rows = tuple(range(num_ws))
        rows = tuple(sorted(set(rows)))
        bad = [r for r in rows if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 0 <= r < num_ws]
        if bad or not rows:
            raise DirectionsError(f"w+ rows {list(rows)} are not all in 0..{num_ws - 1}; this generator has "
                                  f"{num_ws} w+ rows")
        rows = tuple(int(r) for r in rows)
    elif layers is not None:
        raise DirectionsError(f"w+ rows were given, but the directions live in {space}; rows only apply to w directions")
    return dataclasses.replace(d, space=space, layers=rows)
