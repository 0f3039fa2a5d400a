"""Edit recipes: a stack of edits saved by the editor (``panda-jax serve``) and applied to many
samples by ``panda-jax edit --recipe R.json --seeds 0-63``.

A recipe is one JSON object, validated strictly (unknown keys, wrong types, out-of-range
indices and non-finite numbers are refused with a message naming the field)::

    {
      "format": "panda-jax edit recipe",       # marker: exactly this string
      "version": 1,                            # this module reads version 1
      "model": "default",                      # what `panda-jax edit` loads: 'default', a zoo
                                               #   name, a converted directory or a checkpoint
      "layer": 2,                              # the layer the factors were fitted at
      "factors": {"file": "/abs/factors.npz",  # where the factors are (used when FACTORS is not given)
                  "sha256": "<64 hex>",        # the factors file's hash: indices mean nothing
                  "ranks": [32, 8],            #   with other factors, so it must match
                  "shape": [8, 8, 256]},       # [H, W, C] of the layer
      "truncation": 1.0,                       # of the latents, in (0, 1]
      "refine_steps": 0,                       # > 0: refine the parts per sample first (Eq. 6)
      "seed": 7,                               # optional: the sample it was made on (null: an uploaded latent)
      "edits": [                               # 1..64 edits, applied in this order
        {"part": 3, "appearance": 5, "alpha": 12.5},        # part: an index or a list (summed)
        {"mask": [[0.0, 0.5, ...], ...], "appearance": 2, "alpha": -8.0}
      ]                                        # mask: [H][W] weights in [0, 1] on the feature grid
    }

Each edit is ``pj.edit(Z, F, part=..., appearance=..., alpha=...)`` (or ``mask=...``), applied
one after another; with ``refine_steps`` the parts edits use the sample's refined parts.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os

import numpy as np

from panda_jax.errors import ConfigError

FORMAT = "panda-jax edit recipe"
VERSION = 1
MAX_EDITS = 64
MAX_BYTES = 16 << 20  # a recipe file larger than this is refused before parsing

_TOP = {"format", "version", "model", "layer", "factors", "truncation", "refine_steps", "seed", "edits"}
_REQUIRED = _TOP - {"seed"}
_FACTORS = {"file", "sha256", "ranks", "shape"}


class RecipeError(ConfigError):
    """A recipe that is not valid (the message names the field and what was expected)."""


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ---- building -----------------------------------------------------------------------------


def edit_entry(appearance: int, alpha: float, part=None, mask=None) -> dict:
    """One edit of a recipe: ``part`` (an index or a list) or ``mask`` (``[H, W]`` in [0, 1])."""
    e = {"appearance": int(appearance), "alpha": float(alpha)}
    if mask is not None:
        e["mask"] = [[float(v) for v in row] for row in np.asarray(mask, np.float64)]
    elif isinstance(part, (list, tuple)):
        e["part"] = [int(k) for k in part]
    else:
        e["part"] = int(part)
    return e


def make(model: str, layer: int, factors_file: str, factors_sha256: str, ranks, shape, edits, *,
         refine_steps: int = 0, truncation: float = 1.0, seed: int | None = None) -> dict:
    """A recipe (a plain dict, already valid) from its parts; ``edits`` from :func:`edit_entry`."""
    recipe = {
        "format": FORMAT, "version": VERSION, "model": str(model), "layer": int(layer),
        "factors": {"file": os.path.abspath(factors_file), "sha256": str(factors_sha256),
                    "ranks": [int(r) for r in ranks], "shape": [int(s) for s in shape]},
        "truncation": float(truncation), "refine_steps": int(refine_steps), "seed": seed,
        "edits": list(edits),
    }
    return validate(recipe)


def dumps(recipe: dict) -> str:
    return json.dumps(validate(recipe), indent=1, allow_nan=False) + "\n"


# ---- reading and validating ----------------------------------------------------------------


def _int(v, where: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise RecipeError(f"recipe {where} must be an integer; got {v!r}")
    v = int(v)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        rng = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise RecipeError(f"recipe {where} must be in {rng}; got {v}")
    return v


def _real(v, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise RecipeError(f"recipe {where} must be a finite number; got {v!r}")
    return float(v)


def _keys(obj, allowed: set, required: set, where: str):
    if not isinstance(obj, dict):
        raise RecipeError(f"recipe {where} must be a JSON object; got {type(obj).__name__}")
    extra = sorted(set(obj) - allowed)
    if extra:
        raise RecipeError(f"recipe {where} has unknown keys {extra}; allowed: {sorted(allowed)}")
    missing = sorted(required - set(obj))
    if missing:
        raise RecipeError(f"recipe {where} lacks {missing}")


def validate(recipe) -> dict:
    """``recipe`` checked field by field (see the module docstring); returns it, with masks as
    float lists. Index ranges are checked against ``factors.ranks`` and ``factors.shape``."""
    _keys(recipe, _TOP, _REQUIRED, "(the top level)")
    if recipe["format"] != FORMAT:
        raise RecipeError(f"not an edit recipe: 'format' is {recipe['format']!r}, expected {FORMAT!r}")
    version = _int(recipe["version"], "'version'")
    if version != VERSION:
        raise RecipeError(f"recipe version {version} is not supported (this panda-jax reads version {VERSION}); "
                          "export the recipe again with this version's editor")
    if not isinstance(recipe["model"], str) or not recipe["model"]:
        raise RecipeError(f"recipe 'model' must be a non-empty string; got {recipe['model']!r}")
    _int(recipe["layer"], "'layer'", 0)
    f = recipe["factors"]
    _keys(f, _FACTORS, _FACTORS, "'factors'")
    if not isinstance(f["file"], str) or not f["file"]:
        raise RecipeError(f"recipe factors.file must be a path; got {f['file']!r}")
    sha = f["sha256"]
    if not (isinstance(sha, str) and len(sha) == 64 and all(c in "0123456789abcdef" for c in sha)):
        raise RecipeError(f"recipe factors.sha256 must be 64 lowercase hex digits; got {sha!r}")
    if not isinstance(f["ranks"], list) or len(f["ranks"]) != 2:
        raise RecipeError(f"recipe factors.ranks must be [R_C, R_S]; got {f['ranks']!r}")
    rc, rs = (_int(r, "factors.ranks", 1) for r in f["ranks"])
    if not isinstance(f["shape"], list) or len(f["shape"]) != 3:
        raise RecipeError(f"recipe factors.shape must be [H, W, C]; got {f['shape']!r}")
    H, W, _ = (_int(s, "factors.shape", 1) for s in f["shape"])
    t = _real(recipe["truncation"], "'truncation'")
    if not 0 < t <= 1:
        raise RecipeError(f"recipe 'truncation' must be in (0, 1]; got {t}")
    _int(recipe["refine_steps"], "'refine_steps'", 0, 100_000)
    if recipe.get("seed") is not None:
        _int(recipe["seed"], "'seed'")
    edits = recipe["edits"]
    if not isinstance(edits, list) or not 1 <= len(edits) <= MAX_EDITS:
        raise RecipeError(f"recipe 'edits' must be a list of 1..{MAX_EDITS} edits; got "
                          f"{len(edits) if isinstance(edits, list) else type(edits).__name__}")
    for i, e in enumerate(edits):
        where = f"edits[{i}]"
        _keys(e, {"part", "mask", "appearance", "alpha"}, {"appearance", "alpha"}, where)
        if ("part" in e) == ("mask" in e):
            raise RecipeError(f"recipe {where} must have exactly one of 'part' and 'mask'")
        _int(e["appearance"], f"{where}.appearance", 0, rc - 1)
        _real(e["alpha"], f"{where}.alpha")
        if "part" in e:
            p = e["part"]
            items = p if isinstance(p, list) else [p]
            if not items:
                raise RecipeError(f"recipe {where}.part must name at least one part")
            for k in items:
                _int(k, f"{where}.part", 0, rs - 1)
        else:
            m = e["mask"]
            if not (isinstance(m, list) and len(m) == H and all(isinstance(r, list) and len(r) == W for r in m)):
                raise RecipeError(f"recipe {where}.mask must be {H} rows of {W} numbers (the feature grid)")
            for row in m:
                for v in row:
                    v = _real(v, f"{where}.mask")
                    if not 0.0 <= v <= 1.0:
                        raise RecipeError(f"recipe {where}.mask values must be in [0, 1]; got {v}")
    return recipe


def _refuse_constant(name: str):
    raise RecipeError(f"a recipe holds {name}; its numbers must be finite")


def load(path: str) -> dict:
    """Read and validate a recipe file."""
    if not os.path.isfile(path):
        raise RecipeError(f"recipe {path!r} does not exist; give the JSON file the editor exported")
    if os.path.getsize(path) > MAX_BYTES:
        raise RecipeError(f"recipe {path!r} is larger than {MAX_BYTES >> 20} MiB; that is not an edit recipe")
    try:
        with open(path, encoding="utf-8") as fh:
            obj = json.load(fh, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise RecipeError(f"recipe {path!r} is not UTF-8 text; give the JSON file the editor exported") from None
    except json.JSONDecodeError as e:
        raise RecipeError(f"recipe {path!r} is not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    return validate(obj)


def check_factors(recipe: dict, factors, factors_path: str) -> None:
    """Refuse factors other than the recipe's (its indices mean nothing for other factors)."""
    f = recipe["factors"]
    sha = file_sha256(factors_path)
    if sha != f["sha256"]:
        raise RecipeError(
            f"the factors {factors_path!r} are not the ones the recipe was made with (sha256 {sha[:12]}... "
            f"instead of {f['sha256'][:12]}...); give the recipe's factors ({f['file']})")
    if list(factors.ranks) != f["ranks"] or [factors.height, factors.width, factors.channels] != f["shape"]:
        raise RecipeError(f"the factors' ranks {factors.ranks} or shape do not match the recipe's {f['ranks']}, "
                          f"{f['shape']}")


# ---- applying -----------------------------------------------------------------------------


def apply(Z, factors, edits, refined=None):
    """``Z`` ``[N, H, W, C]`` with the recipe's ``edits`` applied in order (``pj.edit`` each).

    ``refined``: per-sample parts ``[N, S, R_S]`` for parts edits (refined recipes), else the
    global parts are used for every sample.
    """
    import jax.numpy as jnp

    import panda_jax as pj
    from panda_jax.refine import refined_factors

    def one(Zs, F):
        for e in edits:
            if "mask" in e:
                Zs = pj.edit(Zs, F, mask=np.asarray(e["mask"], np.float32), appearance=e["appearance"],
                             alpha=e["alpha"])
            else:
                Zs = pj.edit(Zs, F, part=e["part"], appearance=e["appearance"], alpha=e["alpha"])
        return Zs

    if refined is None:
        return one(Z, factors)
    return jnp.concatenate([one(Z[i:i + 1], refined_factors(factors, refined[i])) for i in range(Z.shape[0])])


def region(factors, edits, size) -> np.ndarray:
    """The union of the edits' regions at image resolution ``size`` (bool ``[H, W]``): each part
    map or mask upsampled (bilinear) and taken where it is at least 0.5."""
    from . import figures
    from .pipeline import part_masks

    out = np.zeros(size, bool)
    for e in edits:
        if "mask" in e:
            out |= figures.resize_map(np.asarray(e["mask"], np.float32), size) >= 0.5
        else:
            out |= part_masks(factors, e["part"], size)
    return out
