"""PandA's edit beside GANSpace, SeFa and ReSeFa on the same region, each with its ROIR.

The region is the selected edit's (its part map or brushed mask upsampled, where it is at least
0.5, as ``panda-jax edit`` measures ROIR). The baselines move the latent (z, or w where the
generator has one; :mod:`panda_jax.app.baselines`):

- GANSpace and SeFa: of their top ``k`` directions (found once at start), each sign, the one
  with the lowest ROIR for this region on this sample;
- ReSeFa: its top direction for this region, from the Jacobian of this sample's image.

Each baseline's strength starts matched to PandA's edit (the same RMS change inside the region,
as ``benchmarks/locality.py`` compares them), so ROIR compares leakage at equal effect; each has
its own slider. Choices are cached per sample, region and PandA edit, so a slider move renders
one image per method. Shapes are fixed (batch 2 to choose, batch 1 to render), and ReSeFa's
Jacobian function is built once, so nothing compiles after the warm-up.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import time

import numpy as np

from .engine import compilations
from .state import RequestError, State

METHODS = ("GANSpace", "SeFa", "ReSeFa")
K = 10  # GANSpace and SeFa directions tried
GANSPACE_SAMPLES = 4096
RANGE = 3.0  # a baseline's slider spans this many times its matched strength, each way
CACHE = 32


def inside_rms(mask, x, y) -> float:
    d = np.asarray(y, np.float64) - np.asarray(x, np.float64)
    m = np.asarray(mask, np.float64)[:, :, None]
    return float(np.sqrt((m * d ** 2).sum() / max(m.sum() * d.shape[-1], 1.0)))


class Baselines:
    """The baselines' directions for one generator (found at start) and the compare choices."""

    def __init__(self, engine, k: int = K, ganspace_samples: int = GANSPACE_SAMPLES):
        import jax

        from .. import baselines

        G = engine.G
        self.engine = engine
        t = time.perf_counter()
        self.sefa = baselines.sefa(G, k)
        self.ganspace = baselines.ganspace(G, k, ganspace_samples, key=jax.random.key(engine.seed))
        self.seconds = time.perf_counter() - t
        self.ganspace_samples = ganspace_samples
        self._cache: collections.OrderedDict = collections.OrderedDict()
        # ReSeFa's image function, built once: region_grams_from_fn hashes it as static.
        if G.has_w:
            fn, args = G.image_fn_w()
            num_ws = G.num_ws

            def one(a, w):
                import jax.numpy as jnp

                return fn(a, jnp.broadcast_to(w[None, None, :], (1, num_ws, w.shape[0])))[0]
        else:
            fn, args = G.image_fn()

            def one(a, z):
                return fn(a, z[None])[0]
        self._one, self._args = one, args

    # ---- latents ----------------------------------------------------------------------------
    def _point(self, lat):
        """The latent the directions move: z, or w (all rows alike) for style generators."""
        import jax.numpy as jnp

        G = self.engine.G
        z = lat.z if hasattr(lat, "z") else jnp.asarray(lat)
        return G.wp(lat)[:, 0] if G.has_w else z

    def resefa(self, lat, region: np.ndarray):
        import jax.numpy as jnp

        import panda_jax as pj
        from panda_jax import directions as D

        from .. import baselines

        t = time.perf_counter()
        G = self.engine.G
        grams = D.region_grams_from_fn(self._one, self._point(lat), jnp.asarray(region, jnp.float32),
                                       chunk_size=1, fn_args=self._args)
        try:
            d = D.resefa_from_grams(grams, 1)  # upstream's default: B as it is
        except pj.RankError:  # B singular for this region: upstream's --full_rank regularisation
            d = D.resefa_from_grams(grams, 1, tau=1e-3)
        rows = (0, G.num_ws) if G.has_w else None
        return baselines.LatentEdit("ReSeFa", "w" if G.has_w else "z", np.asarray(d.directions),
                                    np.asarray(d.values), rows, time.perf_counter() - t)

    def images(self, lat, edit, index: int, alphas) -> np.ndarray:
        from .. import baselines, figures

        a = np.asarray(alphas, np.float32)
        lat_n = _tile(lat, len(a))
        return figures.to_uint8(np.asarray(baselines.edited_images(self.engine.G, lat_n, edit, index, a)))

    # ---- choosing and matching ----------------------------------------------------------------
    def choose(self, lat, edit, region, base, target: float, a0: float):
        """The most local (direction, sign) at ``a0``, then its strength matched to ``target``."""
        import panda_jax as pj

        best = None
        xb = base.astype(np.float32) / 127.5 - 1.0
        for i in range(edit.k):
            imgs = self.images(lat, edit, i, [a0, -a0])
            for s, img in zip((1.0, -1.0), imgs):
                y = img.astype(np.float32) / 127.5 - 1.0
                r = float(pj.roir(region.astype(np.float32), xb, y)) if not np.array_equal(xb, y) else np.inf
                if best is None or r < best[0]:
                    best = (r, i, s)
        _, i, s = best
        a = a0
        for _ in range(3):  # secant on the magnitude: the same RMS change inside as PandA's edit
            c = inside_rms(region, base, self.images(lat, edit, i, [s * a])[0])
            a = a * 4.0 if c <= 1e-9 else a * target / c
        return i, s * a


def _tile(lat, n: int):
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda a: jnp.concatenate([a] * n, axis=0), lat)


def _region_key(region: np.ndarray) -> str:
    return hashlib.sha256(np.packbits(region).tobytes()).hexdigest()[:16]


def compare(engine, state: State, obj: dict) -> dict:
    """The ``/api/compare`` answer: ``{"methods": [{name, image, roir, alpha, alpha_range}], ...}``."""
    from . import protocol

    t = time.perf_counter()
    B = engine.baselines
    if B is None:
        raise RequestError(f"the comparison is not available for this generator ({engine.baselines_error})", 501)
    if not state.edits:
        raise RequestError("the stack is empty; add an edit to compare")
    target = protocol.integer(obj.get("target", 0), "target", 0, len(state.edits) - 1)
    alphas = obj.get("alphas", {})
    protocol.check_keys(alphas, set(METHODS), "'alphas'")
    e = state.edits[target]
    if e.alpha == 0.0:
        e = dataclasses.replace(e, alpha=engine.alpha)
    one = dataclasses.replace(state, edits=(e,))
    s, panda_img, _ = engine.edit(one)
    region = engine.region(e, engine.parts(state.sample, state.refine))
    if region.all() or not region.any():
        raise RequestError("the region is empty or covers the whole image; pick another part or brush a region")
    base = s.image_u8
    lat = engine._latent(state.sample)
    key = (state.sample, state.refine, _region_key(region), e.appearance, e.alpha)
    with engine.lock:
        if key not in B._cache:
            target_rms = inside_rms(region, base, panda_img)
            z_scale = float(np.linalg.norm(np.asarray(B._point(lat))))
            a0 = 0.2 * z_scale
            rs = B.resefa(lat, region)
            B._cache[key] = {m: (ed,) + B.choose(lat, ed, region, base, target_rms, a0)
                             for m, ed in (("GANSpace", B.ganspace), ("SeFa", B.sefa), ("ReSeFa", rs))}
            while len(B._cache) > CACHE:
                B._cache.popitem(last=False)
        B._cache.move_to_end(key)
        chosen = B._cache[key]
        out = [{"name": "PandA", "image": protocol.data_url(panda_img), "alpha": e.alpha,
                "roir": engine.roir(region, base, panda_img), "detail": f"appearance {e.appearance} at the region"}]
        for m in METHODS:
            ed, i, a_cal = chosen[m]
            lim = RANGE * abs(a_cal) if a_cal else 1.0
            a = protocol.real(alphas[m], f"alphas.{m}", 10 * lim) if m in alphas else a_cal
            img = B.images(lat, ed, i, [a])[0]
            out.append({"name": m, "image": protocol.data_url(img), "alpha": a, "alpha_range": [-lim, lim],
                        "roir": engine.roir(region, base, img),
                        "detail": f"direction {i} in {ed.space}" + (f" (top {ed.k})" if m != "ReSeFa" else "")})
    return {"methods": out, "ms": 1e3 * (time.perf_counter() - t),
            "note": (f"strengths start matched (the same RMS change inside the region as PandA's edit); GANSpace "
                     f"and SeFa: the most local of their top {B.sefa.k} directions; ReSeFa: its top direction for "
                     "this region. Lower ROIR = more local.")}


def prepare(engine, say=lambda m: None, ganspace_samples: int = GANSPACE_SAMPLES) -> bool:
    """Find the baselines' directions and run one comparison (compiling its functions); on a
    generator without what the baselines need, the comparison is off and the rest works."""
    from .state import EditSpec

    t = time.perf_counter()
    try:
        engine.baselines = Baselines(engine, ganspace_samples=ganspace_samples)
    except Exception as e:
        engine.baselines = None
        engine.baselines_error = f"{type(e).__name__}: {e}"
        say(f"the comparison with GANSpace/SeFa/ReSeFa is off: {engine.baselines_error}")
        return False
    compare(engine, State(("seed", engine.seed), False, (EditSpec(0, engine.alpha, part=0),)), {"target": 0})
    engine.timings["baselines"] = time.perf_counter() - t
    engine.ready_compilations = compilations()
    return True
