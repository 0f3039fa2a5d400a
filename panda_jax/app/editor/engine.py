"""The editor's engine: a generator, its factors, and compiled functions of fixed shapes.

Everything a request can ask for runs through a few jitted functions whose shapes never change
(one sample, a stack of ``max_edits`` edits, a gallery of ``gallery`` previews), so they are
compiled once by :meth:`Engine.warm_up` and never again while the sliders move. Part and
appearance indices are traced (gathered inside the function), unused edit slots have
``alpha = 0``, and the public ``panda_jax`` functions do the work inside (``pj.edit``,
``pj.part_map``, ``pj.saliency``, ``pj.localize``, ``pj.remove_background``, ``pj.resize_maps``);
``G.features`` and ``G.render`` run at batch 1 (and at the gallery's batch).

The stack applies its edits in order, each ``Z <- pj.edit(Z, F, part=k, appearance=j,
alpha=a)`` (or ``mask=m``), exactly as :func:`panda_jax.app.recipe.apply` does for a recipe.
"""

from __future__ import annotations

import collections
import hashlib
import threading
import time
from typing import NamedTuple

import numpy as np

from panda_jax.errors import ConfigError

from .state import EditSpec, RequestError, State

MAX_EDITS = 8
GALLERY = 32  # previews per gallery page (fewer when the factors have fewer appearances)
MAP_LIMIT = 256  # parts and brush grids at the image's size, at most this many pixels a side
SAMPLE_CACHE = 16
LATENT_LIMIT = 64  # uploaded latents kept
ALPHA_LIMIT = 20.0  # |alpha| at most this many times the automatic alpha

_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compilations = [0]
_listening = [False]


def _on_event(name, *_args, **_kw):
    if name == _COMPILE_EVENT:
        _compilations[0] += 1


def compilations() -> int:
    """XLA compilations in this process since the first engine was made (every jit, every
    eager operation on new shapes)."""
    return _compilations[0]


class Sample(NamedTuple):
    Z: object  # [1, h, w, C]
    ctx: object
    image: object  # [1, H, W, 3] float in [-1, 1]
    image_u8: np.ndarray  # [H, W, 3]


class Engine:
    """Serves one generator at one layer with one set of factors (see the module docstring).

    Thread-safe: computations run one at a time under a lock.
    """

    def __init__(self, G, factors, layer: int, *, refine_steps: int = 100, max_edits: int = MAX_EDITS,
                 gallery: int = GALLERY, reference_samples: int = 16, seed: int = 0, info: dict | None = None):
        import jax

        import panda_jax as pj

        if not _listening[0]:
            jax.monitoring.register_event_duration_secs_listener(_on_event)
            _listening[0] = True
        self.G, self.layer = G, int(layer)
        self.h, self.w, self.C = G.layers[self.layer]
        if (factors.height, factors.width, factors.channels) != (self.h, self.w, self.C):
            raise ConfigError(f"the factors are for {factors.height}x{factors.width}x{factors.channels} features "
                              f"but layer {layer} is {self.h}x{self.w}x{self.C}")
        self.F = pj.Factors(np.asarray(factors.appearance, np.float32), np.asarray(factors.parts, np.float32),
                            factors.height, factors.width, factors.meta)
        self.rank_c, self.rank_s = self.F.ranks
        self.refine_steps = int(refine_steps)
        self.max_edits = int(max_edits)
        self.gallery = min(int(gallery), self.rank_c)
        self.seed = int(seed)
        self.info_extra = dict(info or {})
        self.lock = threading.RLock()
        self._samples: collections.OrderedDict = collections.OrderedDict()
        self._refined: collections.OrderedDict = collections.OrderedDict()
        self._latents: collections.OrderedDict = collections.OrderedDict()
        self._build(reference_samples)
        self.ready_compilations = None
        self.timings: dict[str, float] = {}
        self.baselines = None  # compare.Baselines, made by compare.prepare
        self.baselines_error = "not prepared (the server was started with --no-compare)"

    # ---- set-up -----------------------------------------------------------------------------
    def _build(self, n_ref: int):
        import jax
        import jax.numpy as jnp

        import panda_jax as pj

        from .. import pipeline
        from ..commands.saliency import background_appearance

        h, w, R_S, E = self.h, self.w, self.rank_s, self.max_edits
        self.A = jnp.asarray(self.F.appearance)
        self.P = jnp.asarray(self.F.parts)
        # The image size and the display grid of parts and brush strokes.
        lat = pipeline.latents_for_seeds(self.G, [self.seed])
        Z, ctx = self.G.features(lat, self.layer)
        img = self.G.render(Z, self.layer, ctx)
        self.H, self.W = int(img.shape[1]), int(img.shape[2])
        s = min(1.0, MAP_LIMIT / max(self.H, self.W))
        self.mh, self.mw = max(1, round(self.H * s)), max(1, round(self.W * s))
        mh, mw, H, W = self.mh, self.mw, self.H, self.W

        # Reference statistics over a few samples: the automatic alpha, the saliency thresholds
        # (each appearance's mean, as pj.localize's "mean") and the background appearance.
        # Features one at a time: the batch-1 program every request uses, no other compiled.
        lat_r = self.G.sample_latents(jax.random.key(self.seed + 1), n_ref)
        Zr = jnp.concatenate([self.G.features(pipeline.slice_tree(lat_r, i, i + 1), self.layer)[0]
                              for i in range(n_ref)])

        @jax.jit
        def reference(Zr, A, P):
            sal = pj.saliency(Zr, pj.Factors(A, P, h, w))
            thr = jnp.mean(sal.reshape(-1, sal.shape[-1]), axis=0)
            return thr, pj.localize(sal, threshold=thr)

        thr, masks = reference(Zr, self.A, self.P)
        self.thresholds = np.asarray(thr, np.float32)
        self.background = background_appearance(np.asarray(masks))
        self.alpha = float(pipeline.auto_alpha(self.F, Zr))
        self.alpha_limit = ALPHA_LIMIT * max(self.alpha, 1e-6)

        def part_maps(A, P):
            F = pj.Factors(A, P, h, w)
            return jnp.stack([pj.part_map(F, k) for k in range(R_S)])  # [R_S, h, w]

        def stack(Z, A, P, app, part, use_mask, masks, alphas):
            pm = part_maps(A, P)
            for i in range(E):
                m = jnp.where(use_mask[i], masks[i], pm[part[i]])
                Fi = pj.Factors(A[:, app[i]][:, None], P, h, w)
                Z = pj.edit(Z, Fi, mask=m, appearance=0, alpha=alphas[i])
            return Z

        def gallery(Z, A, P, app, part, use_mask, masks, alphas, t_part, t_use_mask, t_mask, t_alpha, apps):
            Zb = stack(Z, A, P, app, part, use_mask, masks, alphas)
            m = jnp.where(t_use_mask, t_mask, part_maps(A, P)[t_part])

            def one(j):
                Fj = pj.Factors(A[:, j][:, None], P, h, w)
                return pj.edit(Zb, Fj, mask=m, appearance=0, alpha=t_alpha)[0]

            return jax.vmap(one)(apps)

        def display(A, P):
            up = pj.resize_maps(part_maps(A, P), (mh, mw))  # [R_S, mh, mw], bilinear
            return jnp.argmax(up, axis=0).astype(jnp.uint8), up

        def saliency(Z, A, P, img, thr, bg):
            F = pj.Factors(A, P, h, w)
            sal = pj.saliency(Z, F)  # [1, h, w, R_C]
            masks = pj.localize(pj.resize_maps(sal, (H, W)), threshold=thr)  # upsampled, then thresholded
            return sal[0], masks[0], pj.remove_background(img, masks[..., bg])[0]

        def brush(m):
            return jnp.clip(pj.resize_maps(m, (h, w)), 0.0, 1.0)

        steps = self.refine_steps

        def refine(Z, A, P):
            return pj.refine(Z, pj.Factors(A, P, h, w), steps=steps)[0]

        def roir(region, x, y):
            return pj.roir(region, x, y)

        self._fns = {
            "edit": jax.jit(stack), "gallery": jax.jit(gallery), "display": jax.jit(display),
            "saliency": jax.jit(saliency), "brush": jax.jit(brush), "maps": jax.jit(part_maps),
            "refine": jax.jit(refine), "roir": jax.jit(roir),
        }

    def jit_cache_sizes(self) -> dict:
        return {name: int(f._cache_size()) for name, f in self._fns.items()}

    # ---- samples ------------------------------------------------------------------------------
    def add_latent(self, z: np.ndarray) -> str:
        """Keep an uploaded latent ``[1, z_dim]``; its id."""
        key = "u" + hashlib.sha256(np.ascontiguousarray(z, np.float32).tobytes()).hexdigest()[:16]
        with self.lock:
            self._latents[key] = np.asarray(z, np.float32)
            self._latents.move_to_end(key)
            while len(self._latents) > LATENT_LIMIT:
                self._latents.popitem(last=False)
        return key

    def has_latent(self, key: str) -> bool:
        return key in self._latents

    def _latent(self, ref):
        from .. import pipeline

        kind, v = ref
        if kind == "seed":
            return pipeline.latents_for_seeds(self.G, [v])
        if v not in self._latents:
            raise RequestError(f"latent {v!r} is not known (uploads are kept for the {LATENT_LIMIT} latest); "
                               "upload it again", 404)
        return self._latents[v]

    def sample(self, ref) -> Sample:
        from .. import figures

        with self.lock:
            if ref in self._samples:
                self._samples.move_to_end(ref)
                return self._samples[ref]
            Z, ctx = self.G.features(self._latent(ref), self.layer)
            img = self.G.render(Z, self.layer, ctx)
            s = Sample(Z, ctx, img, figures.to_uint8(np.asarray(img[0])))
            self._samples[ref] = s
            while len(self._samples) > SAMPLE_CACHE:
                self._samples.popitem(last=False)
            return s

    def parts(self, ref, refine: bool):
        """The parts ``[S, R_S]`` for this sample: the global ones, or refined for it (Eq. 6)."""
        if not refine:
            return self.P
        with self.lock:
            if ref not in self._refined:
                s = self.sample(ref)
                t = time.perf_counter()
                self._refined[ref] = self._fns["refine"](s.Z, self.A, self.P)
                self.timings["refine"] = time.perf_counter() - t
                while len(self._refined) > SAMPLE_CACHE:
                    self._refined.popitem(last=False)
            self._refined.move_to_end(ref)
            return self._refined[ref]

    def display_maps(self, parts):
        """``(labels [mh, mw] uint8, maps [R_S, mh, mw] float)``: the part maps upsampled to the
        display grid, and the strongest part at each pixel (what a click selects)."""
        with self.lock:
            labels, up = self._fns["display"](self.A, parts)
            return np.asarray(labels), np.asarray(up)

    # ---- edits --------------------------------------------------------------------------------
    def _stack_args(self, edits, skip: int | None = None):
        E, h, w = self.max_edits, self.h, self.w
        if len(edits) > E:
            raise RequestError(f"{len(edits)} edits; the editor stacks at most {E}")
        app = np.zeros(E, np.int32)
        part = np.zeros(E, np.int32)
        use_mask = np.zeros(E, bool)
        masks = np.zeros((E, h, w), np.float32)
        alphas = np.zeros(E, np.float32)
        for i, e in enumerate(edits):
            if i == skip:
                continue
            app[i], alphas[i] = e.appearance, e.alpha
            if e.mask is not None:
                use_mask[i], masks[i] = True, e.mask
            else:
                part[i] = e.part
        return app, part, use_mask, masks, alphas

    def edited_features(self, state: State):
        s = self.sample(state.sample)
        P = self.parts(state.sample, state.refine)
        with self.lock:
            return s, self._fns["edit"](s.Z, self.A, P, *self._stack_args(state.edits))

    def render(self, Z, ctx) -> np.ndarray:
        """``uint8 [N, H, W, 3]``."""
        from .. import figures

        with self.lock:
            return figures.to_uint8(np.asarray(self.G.render(Z, self.layer, ctx)))

    def edit(self, state: State):
        """``(sample, edited image uint8 [H, W, 3], edited features)``."""
        with self.lock:
            s, Ze = self.edited_features(state)
            return s, self.render(Ze, s.ctx)[0], Ze

    def gallery_images(self, state: State, target: int, page: int = 0, alpha: float | None = None):
        """Previews of every appearance (``gallery`` per page) at the region of edit ``target``,
        with the other edits of the stack applied: ``(appearance indices, uint8 images, alpha)``."""
        from .. import pipeline

        if not 0 <= target < len(state.edits):
            raise RequestError(f"target {target} is not an edit of the stack (0..{len(state.edits) - 1})")
        pages = -(-self.rank_c // self.gallery)
        if not 0 <= page < pages:
            raise RequestError(f"gallery page {page} is out of range (0..{pages - 1})")
        e = state.edits[target]
        a = e.alpha if alpha is None else alpha
        if a == 0.0:
            a = self.alpha
        js = np.arange(page * self.gallery, (page + 1) * self.gallery)
        shown = js[js < self.rank_c]
        js = np.minimum(js, self.rank_c - 1).astype(np.int32)  # the last page padded: fixed shape
        s = self.sample(state.sample)
        P = self.parts(state.sample, state.refine)
        mask = np.zeros((self.h, self.w), np.float32) if e.mask is None else e.mask
        with self.lock:
            Zg = self._fns["gallery"](s.Z, self.A, P, *self._stack_args(state.edits, skip=target),
                                      np.int32(e.part or 0), np.bool_(e.mask is not None), mask, np.float32(a), js)
            ctx = pipeline.tile_ctx(s.ctx, self.gallery)
            imgs = self.render(Zg, ctx)
        return [int(j) for j in shown], imgs[:len(shown)], float(a)

    def region(self, e: EditSpec, parts) -> np.ndarray:
        """The region of one edit at image resolution (bool): its part map or mask upsampled
        (bilinear) where it is at least 0.5, as ``panda-jax edit`` measures ROIR."""
        from .. import figures

        if e.mask is not None:
            m = e.mask
        else:
            with self.lock:
                m = np.asarray(self._fns["maps"](self.A, parts))[e.part]
        return figures.resize_map(m, (self.H, self.W)) >= 0.5

    def roir(self, region: np.ndarray, original_u8: np.ndarray, edited_u8: np.ndarray):
        """Paper Eq. 7 on the displayed images (in [-1, 1]); None when the region is empty or
        everything, or nothing changed."""
        if region.all() or not region.any():
            return None
        x = original_u8.astype(np.float32) / 127.5 - 1.0
        y = edited_u8.astype(np.float32) / 127.5 - 1.0
        if np.array_equal(x, y):
            return None
        with self.lock:
            return float(self._fns["roir"](region.astype(np.float32), x, y))

    def brush_to_grid(self, m: np.ndarray) -> np.ndarray:
        """A brushed mask on the display grid ``[mh, mw]`` in [0, 1] -> the feature grid ``[h, w]``
        (``pj.resize_maps``, bilinear with antialiasing), as ``pj.edit`` would resize it."""
        with self.lock:
            return np.asarray(self._fns["brush"](np.asarray(m, np.float32)))

    def saliency(self, state: State):
        """On the edited sample: ``(saliency [h, w, R_C], masks [H, W, R_C] bool, background
        removed uint8 [H, W, 3], edited image uint8)``."""
        from .. import figures

        with self.lock:
            s, img_u8, Ze = self.edit(state)
            img = np.asarray(img_u8, np.float32)[None] / 127.5 - 1.0
            sal, masks, nobg = self._fns["saliency"](Ze, self.A, self.P, img, self.thresholds,
                                                      np.int32(self.background))
            return np.asarray(sal), np.asarray(masks), figures.to_uint8(np.asarray(nobg)), img_u8

    def sweep(self, state: State, target: int, frames: int):
        """Frames sweeping edit ``target``'s alpha over the slider's range (uint8)."""
        import dataclasses

        if not 0 <= target < len(state.edits):
            raise RequestError(f"target {target} is not an edit of the stack (0..{len(state.edits) - 1})")
        top = 2.0 * self.alpha
        out = []
        for a in np.linspace(-top, top, frames):
            edits = list(state.edits)
            edits[target] = dataclasses.replace(edits[target], alpha=float(a))
            out.append(self.edit(dataclasses.replace(state, edits=tuple(edits)))[1])
        return out

    # ---- warm-up ------------------------------------------------------------------------------
    def warm_up(self):
        """Run every operation once at the shapes requests use, so none compiles later (the
        comparison warms up in :func:`.compare.prepare`)."""
        from .. import figures

        t = time.perf_counter()
        ref = ("seed", self.seed)
        mask = np.full((self.h, self.w), 0.5, np.float32)
        edits = (EditSpec(0, self.alpha, part=0), EditSpec(self.rank_c - 1, -self.alpha, mask=mask))
        for refine in (False, True):
            st = State(ref, refine, edits)
            s, img, _ = self.edit(st)
            self.display_maps(self.parts(ref, refine))
            self.gallery_images(st, 0)
            self.gallery_images(st, 1)
            for e in edits:
                self.roir(self.region(e, self.parts(ref, refine)), s.image_u8, img)
        sal, masks, nobg, img = self.saliency(State(ref, False, edits))
        figures.heatmap_image(img, sal[:, :, 0])  # loads matplotlib's colour maps
        self.brush_to_grid(np.zeros((self.mh, self.mw), np.float32))
        if self.uploads_allowed():
            self.sample(("latent", self.add_latent(np.zeros((1, self.z_dim()), np.float32))))
        self._samples.clear()
        self._refined.clear()
        self.timings["warm_up"] = time.perf_counter() - t
        self.ready_compilations = compilations()

    def z_dim(self) -> int:
        return int(self.G.z_dim)

    def uploads_allowed(self) -> bool:
        """Uploaded latents are plain z vectors: unconditional generators only."""
        return self.G.family != "biggan"

    # ---- description ------------------------------------------------------------------------
    def describe(self) -> dict:
        from .. import figures

        return {
            **self.info_extra,
            "family": self.G.family, "layer": self.layer, "features": [self.h, self.w, self.C],
            "image": [self.H, self.W], "map_size": [self.mh, self.mw], "ranks": [self.rank_c, self.rank_s],
            "alpha": self.alpha, "alpha_range": [-2.0 * self.alpha, 2.0 * self.alpha], "alpha_limit": self.alpha_limit,
            "max_edits": self.max_edits, "gallery": self.gallery, "refine_steps": self.refine_steps,
            "background_appearance": self.background, "z_dim": self.z_dim(), "seed": self.seed,
            "uploads": self.uploads_allowed(),
            "compare": self.baselines is not None, "compare_error": None if self.baselines else self.baselines_error,
            "palette": [[int(c) for c in rgb] for rgb in figures.palette(self.rank_s)],
            "compilations": {"total": compilations(), "ready": self.ready_compilations},
            "jit_cache": self.jit_cache_sizes(),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }
