"""What travels between the page and the server: request bodies checked strictly, images
encoded as PNG (base64 ``data:`` URLs inside JSON, or ``image/png`` downloads) and GIF.

A request names no file and no path: a sample is a seed or the id of an uploaded latent; an
edit is a part index or a brushed mask on the feature grid, an appearance index and alpha.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import numbers

import numpy as np

from .state import EditSpec, RequestError, State

SEED_LIMIT = 1 << 31
MAX_LATENT_BYTES = 1 << 20


def _refuse_constant(name):
    raise RequestError(f"the request holds {name}; numbers must be finite")


def parse_json(body: bytes) -> dict:
    """A JSON object from a request body (UTF-8); anything else is a :class:`RequestError`."""
    try:
        obj = json.loads(body.decode("utf-8"), parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise RequestError("the request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise RequestError(f"the request body is not valid JSON ({e.msg} at position {e.pos})") from None
    if not isinstance(obj, dict):
        raise RequestError(f"the request body must be a JSON object; got {type(obj).__name__}")
    return obj


def check_keys(obj, allowed: set, where: str):
    if not isinstance(obj, dict):
        raise RequestError(f"{where} must be a JSON object; got {type(obj).__name__}")
    extra = sorted(set(obj) - allowed)
    if extra:
        raise RequestError(f"{where} has unknown keys {extra}; allowed: {sorted(allowed)}")


def integer(v, what: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise RequestError(f"{what} must be an integer; got {v!r}")
    if not lo <= int(v) <= hi:
        raise RequestError(f"{what} {v} is out of range ({lo}..{hi})")
    return int(v)


def real(v, what: str, limit: float) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise RequestError(f"{what} must be a finite number; got {v!r}")
    if abs(float(v)) > limit:
        raise RequestError(f"{what} {v} is outside the range the editor allows (|{what}| <= {limit:.4g})")
    return float(v)


def boolean(v, what: str) -> bool:
    if not isinstance(v, bool):
        raise RequestError(f"{what} must be true or false; got {v!r}")
    return v


def parse_sample(engine, v) -> tuple:
    check_keys(v, {"seed", "latent"}, "'sample'")
    if ("seed" in v) == ("latent" in v):
        raise RequestError("'sample' must have exactly one of 'seed' and 'latent'")
    if "seed" in v:
        return ("seed", integer(v["seed"], "seed", -SEED_LIMIT + 1, SEED_LIMIT - 1))
    key = v["latent"]
    if not isinstance(key, str) or not engine.has_latent(key):
        raise RequestError(f"latent {key!r} is not known; upload the .npy file again", 404)
    return ("latent", key)


def parse_mask(engine, v, what: str) -> np.ndarray:
    h, w = engine.h, engine.w
    if not (isinstance(v, list) and len(v) == h and all(isinstance(r, list) and len(r) == w for r in v)):
        raise RequestError(f"{what} must be {h} rows of {w} numbers (the feature grid)")
    vals = [x for r in v for x in r]
    if any(isinstance(x, bool) or not isinstance(x, numbers.Real) for x in vals):
        raise RequestError(f"{what} must hold numbers only")
    m = np.asarray(vals, np.float64).reshape(h, w)
    if not np.isfinite(m).all() or m.min() < 0 or m.max() > 1:
        raise RequestError(f"{what} values must be finite and in [0, 1]")
    return m.astype(np.float32)


def parse_edit(engine, v, i: int) -> EditSpec:
    where = f"edits[{i}]"
    check_keys(v, {"part", "mask", "appearance", "alpha"}, where)
    for k in ("appearance", "alpha"):
        if k not in v:
            raise RequestError(f"{where} lacks '{k}'")
    if ("part" in v) == ("mask" in v):
        raise RequestError(f"{where} must have exactly one of 'part' and 'mask'")
    j = integer(v["appearance"], f"{where}.appearance", 0, engine.rank_c - 1)
    a = real(v["alpha"], "alpha", engine.alpha_limit)
    if "part" in v:
        return EditSpec(j, a, part=integer(v["part"], f"{where}.part", 0, engine.rank_s - 1))
    return EditSpec(j, a, mask=parse_mask(engine, v["mask"], f"{where}.mask"))


def parse_state(engine, obj: dict, extra: set = frozenset()) -> State:
    """The page's state: ``{"sample": {...}, "refine": bool, "edits": [...]}`` (plus ``extra`` keys)."""
    check_keys(obj, {"sample", "refine", "edits"} | set(extra), "the request")
    if "sample" not in obj:
        raise RequestError("the request lacks 'sample' ({'seed': S} or {'latent': ID})")
    edits = obj.get("edits", [])
    if not isinstance(edits, list):
        raise RequestError(f"'edits' must be a list; got {type(edits).__name__}")
    if len(edits) > engine.max_edits:
        raise RequestError(f"{len(edits)} edits; the editor stacks at most {engine.max_edits}")
    return State(parse_sample(engine, obj["sample"]), boolean(obj.get("refine", False), "refine"),
                 tuple(parse_edit(engine, e, i) for i, e in enumerate(edits)))


def parse_brush(engine, obj: dict) -> np.ndarray:
    """``{"width": mw, "height": mh, "data": base64 of mh * mw bytes}`` -> ``[mh, mw]`` in [0, 1]."""
    check_keys(obj, {"width", "height", "data"}, "the request")
    w = integer(obj.get("width"), "width", engine.mw, engine.mw)
    h = integer(obj.get("height"), "height", engine.mh, engine.mh)
    data = obj.get("data")
    if not isinstance(data, str) or len(data) > 4 * (h * w // 3 + 2):
        raise RequestError(f"'data' must be base64 of {h * w} bytes")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("'data' is not valid base64") from None
    if len(raw) != h * w:
        raise RequestError(f"'data' holds {len(raw)} bytes; expected {h * w} ({h} x {w})")
    return np.frombuffer(raw, np.uint8).reshape(h, w).astype(np.float32) / 255.0


def parse_latent(engine, body: bytes) -> np.ndarray:
    """An uploaded ``.npy``: one latent ``[z_dim]`` or ``[1, z_dim]`` of finite floats, read
    with ``allow_pickle=False``."""
    if not engine.uploads_allowed():
        raise RequestError(f"uploaded latents work for unconditional generators; this {engine.G.family} "
                           "generator also needs a class, so pick samples by seed")
    if len(body) > MAX_LATENT_BYTES:
        raise RequestError(f"the upload is {len(body)} bytes; latents are at most {MAX_LATENT_BYTES} bytes", 413)
    try:
        z = np.load(io.BytesIO(body), allow_pickle=False)
    except ValueError as e:  # pickled object arrays, a bad header
        raise RequestError(f"not a plain .npy array ({e}); save it with numpy.save(path, z)") from None
    except (OSError, EOFError):
        raise RequestError("not a .npy file; save the latent with numpy.save(path, z)") from None
    if not isinstance(z, np.ndarray):
        raise RequestError("give one .npy array (not an .npz archive)")
    d = engine.z_dim()
    if z.dtype.kind not in "fiu" or z.shape not in ((d,), (1, d)):
        raise RequestError(f"the latent must be {d} numbers ([{d}] or [1, {d}]); got dtype {z.dtype}, shape {z.shape}")
    z = z.astype(np.float32).reshape(1, d)
    if not np.isfinite(z).all():
        raise RequestError("the latent holds NaN/inf values")
    return z


# ---- images -------------------------------------------------------------------------------


def png_bytes(img: np.ndarray, scale: int = 1) -> bytes:
    from PIL import Image

    if scale > 1:
        img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def data_url(img: np.ndarray) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode("ascii")


def b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a).tobytes()).decode("ascii")


def gif_bytes(frames, duration_ms: int = 80, scale: int = 1) -> bytes:
    from PIL import Image

    fr = [np.repeat(np.repeat(f, scale, axis=0), scale, axis=1) if scale > 1 else f for f in frames]
    fr = fr + fr[-2:0:-1]  # forwards, then back
    ims = [Image.fromarray(f) for f in fr]
    buf = io.BytesIO()
    ims[0].save(buf, format="GIF", save_all=True, append_images=ims[1:], duration=duration_ms, loop=0)
    return buf.getvalue()


def saliency_images(engine, img, sal, masks, nobg, j: int) -> dict:
    """Data URLs: appearance ``j``'s saliency as a heat map, its mask, the background removed."""
    from .. import figures

    return {
        "heatmap": data_url(figures.heatmap_image(img, sal[:, :, j])),
        "mask": data_url(figures.mask_image(img, masks[:, :, j])),
        "background_removed": data_url(nobg),
        "background_mask": data_url(figures.mask_image(img, masks[:, :, engine.background])),
    }


def maps_payload(engine, labels: np.ndarray, maps: np.ndarray) -> dict:
    """Part maps for the page: the strongest part per pixel of the display grid (what a click
    selects) and each map quantised to bytes (for drawing)."""
    q = np.clip(np.rint(np.asarray(maps) * 255.0), 0, 255).astype(np.uint8)
    return {"labels": b64(labels.astype(np.uint8)), "maps": b64(q), "map_size": [engine.mh, engine.mw]}


def recipe_for(engine, state: State) -> dict:
    """The edit recipe (see :mod:`panda_jax.app.recipe`) for the page's stack."""
    from .. import recipe

    if not state.edits:
        raise RequestError("the stack is empty; add an edit before exporting a recipe")
    x = engine.info_extra
    edits = [recipe.edit_entry(e.appearance, e.alpha, part=e.part, mask=e.mask) for e in state.edits]
    return recipe.make(x["model"], engine.layer, x["factors_file"], x["factors_sha256"], (engine.rank_c, engine.rank_s),
                       (engine.h, engine.w, engine.C), edits, refine_steps=engine.refine_steps if state.refine else 0,
                       seed=state.sample[1] if state.sample[0] == "seed" else None)
