"""The ``panda-jax`` command: convert a GAN, fit parts and appearances, refine, edit, localise.

    panda-jax convert SRC OUT [--arch NAME]
    panda-jax fit MODEL --layer L --ranks RC RS --out factors.npz [--samples N --steps T ...]
    panda-jax refine FACTORS [MODEL] --seeds S ... --out DIR
    panda-jax edit FACTORS [MODEL] --part K --appearance J [--alpha A ...] --seeds S ... --out DIR
    panda-jax saliency FACTORS [MODEL] --seeds S ... --out DIR
    panda-jax demo [--out DIR]

``MODEL`` is a directory written by ``panda-jax convert``, a checkpoint file (converted in
memory), or ``default`` (the embedded faces DCGAN). Commands that take factors default
``MODEL`` to the one the factors were fitted on.

A user error prints one line ``panda-jax: error: ...`` and exits with status 2; outputs are
written to temporary siblings and renamed into place, so a failed run leaves no partial file.
The generator and conversion packages are imported only inside the commands.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time

from ._io import atomic_write, default_permissions, real_target, replace_dir, staging_dir
from .errors import CheckpointError, ConfigError, FactorsError, PandaError, RankError

PROG = "panda-jax"
DEFAULT_MODEL = "default"
# The demo's defaults: see `demo --help` and the report it writes.
DEMO_LAYER, DEMO_RANKS, DEMO_SAMPLES, DEMO_STEPS = 2, (32, 8), 128, 200
EDIT_SCALE = 2.5  # automatic |alpha|: this many times the mean feature norm per position
RENDER_BATCH = 32


class UsageError(Exception):
    """A bad command line (argparse's complaint)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise UsageError(f"{message} (see: {self.prog} --help)")


# ---- small helpers ---------------------------------------------------------------------------


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def _lr(s: str):
    if s == "auto":
        return "auto"
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive number, got {s!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive number, got {s!r}")
    return v


def _threshold(s: str):
    if s == "mean":
        return "mean"
    try:
        return float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'mean' or a number, got {s!r}") from None


def _show_progress(args) -> bool:
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def _bar(iterable=None, total=None, desc="", enabled=True):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not enabled)


def _say(args, msg: str):
    if not getattr(args, "quiet", False):
        print(msg, flush=True)


class _Staging:
    """Files for ``out_dir`` are written into a staging sibling, then renamed into place on
    success (existing entries of the same name are replaced, others are left alone); on failure
    the staging folder is removed. A symbolic link as ``out_dir`` is written through."""

    def __init__(self, out_dir: str):
        self.out = real_target(out_dir)
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            raise ConfigError(f"output {out_dir!r} exists and is not a directory; give a directory path")
        self.tmp = staging_dir(self.out)

    def path(self, *names: str) -> str:
        return os.path.join(self.tmp, *names)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            default_permissions(self.tmp)
            os.makedirs(self.out, exist_ok=True)
            for name in sorted(os.listdir(self.tmp)):
                src, dst = os.path.join(self.tmp, name), os.path.join(self.out, name)
                if os.path.isdir(dst) and not os.path.islink(dst):
                    replace_dir(src, dst)
                else:
                    os.replace(src, dst)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False


def _write_json(path: str, obj) -> str:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")

    return atomic_write(path, write)


def _save_npz(path: str, **arrays) -> str:
    import numpy as np

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write)


# ---- models, features, rendering --------------------------------------------------------


def _default_checkpoint() -> str:
    from ported_gens.dcgan import default_checkpoint

    return default_checkpoint()


def _source_path(src: str) -> str:
    """``default`` -> the embedded faces DCGAN checkpoint; other values unchanged."""
    return _default_checkpoint() if src == DEFAULT_MODEL else src


def _load_model(spec: str | None):
    """A generator from a converted directory, a checkpoint file, or ``default``."""
    import convert
    import ported_gens

    if spec is None:
        raise ConfigError("no model given and the factors do not name one; give MODEL (a directory from panda-jax convert)")
    if spec in (DEFAULT_MODEL, "dcgan_faces64"):
        return convert.to_generator(_default_checkpoint())
    if os.path.isdir(spec):
        return ported_gens.load(spec)
    if os.path.isfile(spec):
        return convert.to_generator(spec)
    raise CheckpointError(
        f"model {spec!r} does not exist; give a directory written by `panda-jax convert`, "
        f"a checkpoint file, or '{DEFAULT_MODEL}' for the embedded faces DCGAN"
    )


def _check_ranks(G, layer: int, ranks) -> tuple[int, int]:
    H, W, C = G.layers[layer]
    rc, rs = ranks
    if not (1 <= rc <= C and 1 <= rs <= H * W):
        raise RankError(
            f"ranks ({rc}, {rs}) do not fit layer {layer} ({H}x{W}x{C} features): R_C must be in 1..{C} "
            f"and R_S in 1..{H * W}; choose smaller ranks or another --layer"
        )
    return int(rc), int(rs)


def _slice(tree, i: int, j: int):
    import jax

    return jax.tree_util.tree_map(lambda a: a[i:j], tree)


def _concat(trees):
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a, axis=0), *trees)


def _latents_for_seeds(G, seeds):
    """One latent per seed (``sample_latents(key(seed), 1)``), stacked."""
    import jax

    return _concat([G.sample_latents(jax.random.key(int(s)), 1) for s in seeds])


def _features(G, lat, layer: int, truncation: float = 1.0, batch: int = 64, progress: bool = False,
              desc: str = "features"):
    """``(Z, ctx)`` for all latents, computed ``batch`` at a time."""
    import jax

    n = jax.tree_util.tree_leaves(lat)[0].shape[0]
    outs = []
    for i in _bar(range(0, n, batch), desc=desc, enabled=progress):
        outs.append(G.features(_slice(lat, i, i + batch), layer, truncation))
    return _concat([o[0] for o in outs]), _concat([o[1] for o in outs])


def _render(G, Z, layer: int, ctx, batch: int = RENDER_BATCH, progress: bool = False, desc: str = "render"):
    """Images ``[N, H, W, 3]`` as numpy, rendered in batches padded to ``batch`` (or, for fewer
    images, to a power of two) so few compilations serve every call."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    n = Z.shape[0]
    out = []
    for i in _bar(range(0, n, batch), desc=desc, enabled=progress):
        z, c = Z[i:i + batch], _slice(ctx, i, i + batch)
        k = z.shape[0]
        size = batch if n > batch else 1 << (k - 1).bit_length()  # few distinct shapes: few compilations
        if k < size:
            pad = lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], size - k, axis=0)])  # noqa: E731
            z, c = pad(z), jax.tree_util.tree_map(pad, c)
        out.append(np.asarray(G.render(z, layer, c))[:k])
    return np.concatenate(out)


def _tile_ctx(ctx, k: int):
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda a: jnp.concatenate([a] * k, axis=0), ctx)


def _feature_scale(Z) -> float:
    """Mean Euclidean norm of the feature vector at a position (the scale of edits)."""
    import jax.numpy as jnp

    return float(jnp.mean(jnp.linalg.norm(Z, axis=-1)))


def _load_factors_for(args):
    import panda_jax as pj

    F = pj.load_factors(args.factors)
    meta = F.meta
    layer = args.layer if getattr(args, "layer", None) is not None else meta.get("layer")
    if layer is None:
        raise FactorsError(f"{args.factors!r} does not record its layer; give --layer")
    model = args.model if args.model is not None else meta.get("model")
    G = _load_model(model)
    layer = G.check_layer(layer)
    H, W, C = G.layers[layer]
    if (F.height, F.width, F.channels) != (H, W, C):
        raise FactorsError(
            f"the factors are for {F.height}x{F.width}x{F.channels} features but layer {layer} of this "
            f"{G.family} generator is {H}x{W}x{C}; give the model and --layer they were fitted on"
        )
    return F, G, int(layer)


def _part_masks(F, parts, size):
    """Binary masks at image resolution from the (summed, min-max normalised) part map(s)."""
    import numpy as np

    import panda_jax as pj

    from . import viz

    m = np.asarray(pj.part_map(F, parts))
    return viz.resize_map(m, size) >= 0.5


def _auto_alpha(F, Z) -> float:
    scale = F.meta.get("feature_scale") or _feature_scale(Z)
    return round(EDIT_SCALE * float(scale), 3)


# ---- commands ------------------------------------------------------------------------------


def _sample_grid(G, seed: int = 0):
    import jax
    import numpy as np

    from . import viz

    H = max(h for h, _, _ in G.layers.values())
    n = 16 if H <= 256 else 4
    imgs = []
    lat = G.sample_latents(jax.random.key(seed), n)
    step = 4 if H > 256 else n
    for i in range(0, n, step):
        imgs.append(np.asarray(G.generate(_slice(lat, i, i + step))))
    imgs = viz.to_uint8(np.concatenate(imgs))
    grid = viz.tile(list(imgs), cols=4 if n >= 4 else n)
    return grid, 2 if imgs.shape[1] <= 128 else 1


def _convert_into(src: str, out: str, arch: str | None, samples: bool, seed: int = 0, force: bool = False):
    """Convert ``src`` into ``out`` (atomic) and write ``out/samples.png``; the generator."""
    import convert
    import ported_gens

    from . import viz

    convert.convert(src, out, arch, force=force)
    G = ported_gens.load(out)
    if samples:
        grid, scale = _sample_grid(G, seed)
        viz.save_image(os.path.join(out, "samples.png"), grid, scale=scale)
    return G


def cmd_convert(args):
    src = _source_path(args.src)
    if not os.path.exists(src):
        raise CheckpointError(f"checkpoint {args.src!r} does not exist; give the path of a checkpoint file or folder")
    t0 = time.perf_counter()
    G = _convert_into(src, args.out, args.arch, samples=not args.no_samples, seed=args.seed, force=args.force)
    layers = ", ".join(f"{l}: {h}x{w}x{c}" for l, (h, w, c) in sorted(G.layers.items()))
    _say(args, f"converted {os.path.basename(src)} -> {args.out} ({G.family} {G.config}) in "
               f"{time.perf_counter() - t0:.1f} s")
    _say(args, f"layers {{{layers}}}")
    if not args.no_samples:
        _say(args, f"check the samples: {os.path.join(args.out, 'samples.png')}")
    return 0


def _fit(G, layer, ranks, samples, steps, seed, lr, batch, method="pgd", truncation=1.0, stochastic=False,
         progress=False):
    """Sample features and fit: ``(FitResult, features, latents)`` (``None, None`` when stochastic)."""
    import jax

    import panda_jax as pj

    key = jax.random.key(seed)
    k_lat, k_fit = jax.random.split(key)
    if stochastic:
        from flax import nnx

        from ported_gens.base import as_latents

        graphdef, state = nnx.split(G)

        def sample_fn(state, key, n):
            g = nnx.merge(graphdef, state)
            return g._features(as_latents(g.sample_latents(key, n)), layer, truncation)[0]

        res = pj.fit_stream(sample_fn, ranks, steps=steps, batch_size=batch, lr=lr, key=k_fit,
                            sample_args=state, progress=progress)
        return res, None, None
    lat = G.sample_latents(k_lat, samples)
    Z, _ = _features(G, lat, layer, truncation, batch, progress)
    res = pj.fit(Z, ranks=ranks, steps=steps, lr=lr, method=method, key=k_fit, progress=progress)
    return res, Z, lat


def cmd_fit(args):
    import panda_jax as pj

    out = args.out if args.out.endswith(".npz") else args.out + ".npz"
    if os.path.isdir(out):
        raise ConfigError(f"--out {args.out!r} is a directory; give a file name such as factors.npz")
    G = _load_model(args.model)
    layer = G.check_layer(args.layer)
    ranks = _check_ranks(G, layer, args.ranks)
    if args.method == "adam" and args.stochastic:
        raise ConfigError("--stochastic fits with projected gradient steps only; drop --method adam")
    H, W, C = G.layers[layer]
    res, Z, _ = _fit(G, layer, ranks, args.samples, args.steps, args.seed, args.lr, args.batch, args.method,
                  args.truncation, args.stochastic, _show_progress(args))
    meta = {
        "model": DEFAULT_MODEL if args.model in (DEFAULT_MODEL, "dcgan_faces64") else os.path.abspath(args.model),
        "family": G.family, "layer": layer, "samples": args.samples, "steps": res.n_steps, "seed": args.seed,
        "lr": args.lr, "method": args.method, "truncation": args.truncation, "stochastic": args.stochastic,
    }
    if Z is not None:
        meta["feature_scale"] = _feature_scale(Z)
    F = res.factors.with_meta(**meta)
    pj.save_factors(out, F)
    if args.loss_plot:
        from . import viz

        viz.save_loss_curve(args.loss_plot, res.losses, title=f"fit at layer {layer}, R=({ranks[0]}, {ranks[1]})")
    l0, l1 = (float(res.losses[0]), float(res.losses[-1])) if len(res.losses) else (float("nan"),) * 2
    _say(args, f"fitted R_C={ranks[0]}, R_S={ranks[1]} at layer {layer} ({H}x{W}x{C}) in {res.n_steps} steps, "
               f"{res.seconds:.1f} s; loss {l0:.4g} -> {l1:.4g}; wrote {out}")
    return 0


def _refine_parts(Z, F, steps, lr):
    import panda_jax as pj

    return pj.refine(Z, F, steps=steps, lr=lr)


def cmd_refine(args):
    import numpy as np

    from . import viz

    F, G, layer = _load_factors_for(args)
    lat = _latents_for_seeds(G, args.seeds)
    Z, ctx = _features(G, lat, layer)
    t0 = time.perf_counter()
    parts = np.asarray(_refine_parts(Z, F, args.steps, args.lr))
    secs = time.perf_counter() - t0
    imgs = _render(G, Z, layer, ctx)
    R, h, w = F.rank_s, F.height, F.width
    maps = parts.transpose(0, 2, 1).reshape(len(args.seeds), R, h, w)
    glob = np.asarray(F.part_maps())
    with _Staging(args.out) as st:
        _save_npz(st.path("refined.npz"), parts=parts.astype(np.float32), seeds=np.asarray(args.seeds),
                  height=np.int64(h), width=np.int64(w))
        viz.save_overlays(st.path("parts_global.png"), imgs, glob, titles=[f"seed {s}" for s in args.seeds])
        viz.save_overlays(st.path("parts_refined.png"), imgs, maps, titles=[f"seed {s} refined" for s in args.seeds])
    _say(args, f"refined the parts of {len(args.seeds)} samples in {secs:.1f} s; wrote refined.npz, "
               f"parts_global.png, parts_refined.png in {args.out}")
    return 0


def cmd_edit(args):
    import jax.numpy as jnp
    import numpy as np

    import panda_jax as pj

    from . import viz

    F, G, layer = _load_factors_for(args)
    parts = args.part if len(args.part) > 1 else args.part[0]
    part_desc = f"part {args.part[0]}" if len(args.part) == 1 else "parts " + "+".join(map(str, args.part))
    pj.part_map(F, parts)  # checks the part indices
    if not 0 <= args.appearance < F.rank_c:
        raise ConfigError(f"appearance index {args.appearance} is out of range; the factors have {F.rank_c} (use 0..{F.rank_c - 1})")
    lat = _latents_for_seeds(G, args.seeds)
    Z, ctx = _features(G, lat, layer)
    alphas = args.alpha
    if alphas is None:
        a = _auto_alpha(F, Z)
        alphas = [-a, a]
    progress = _show_progress(args)
    if args.refine:
        refined = np.asarray(_refine_parts(Z, F, args.refine, "auto"))
        from panda_jax.refine import refined_factors

        per = [refined_factors(F, jnp.asarray(p)) for p in refined]
    else:
        per = [F] * len(args.seeds)
    # One batch for everything: the originals (alpha 0), the edits, and the sweep frames.
    sweep = list(np.linspace(-max(map(abs, alphas)), max(map(abs, alphas)), args.gif_frames)) if args.gif else []
    strengths = [0.0] + [float(a) for a in alphas] + [float(a) for a in sweep]
    n, K = len(args.seeds), len(strengths)
    E = jnp.concatenate([pj.edit_sweep(Z[i:i + 1], per[i], part=parts, appearance=args.appearance, alphas=strengths)
                         for i in range(n)], axis=1)  # [K, N, H, W, C]
    out = _render(G, E.reshape((K * n,) + E.shape[2:]), layer, _tile_ctx(ctx, K), progress=progress, desc="edits")
    out = out.reshape((K, n) + out.shape[1:])
    imgs, out_imgs = out[0], out[1:1 + len(alphas)]
    size = imgs.shape[1:3]
    masks = np.stack([_part_masks(f, parts, size) for f in per])
    scores = [pj.roir(masks, imgs, out_imgs[k]) for k in range(len(alphas))]
    frames = None
    if sweep:
        fr = viz.to_uint8(out[1 + len(alphas):])
        frames = [viz.tile(list(f), cols=n) for f in fr]
    with _Staging(args.out) as st:
        cells = [[viz.to_uint8(imgs[i])] + [viz.to_uint8(out_imgs[k, i]) for k in range(len(alphas))]
                 for i in range(len(args.seeds))]
        viz.save_labelled_grid(st.path("strip.png"), cells, [f"seed {s}" for s in args.seeds],
                               ["original"] + [f"alpha {a:+g}" for a in alphas],
                               title=f"{part_desc}, appearance {args.appearance} (layer {layer})")
        for i, s in enumerate(args.seeds):
            viz.save_image(st.path(f"seed{s}_original.png"), viz.to_uint8(imgs[i]))
            for k, a in enumerate(alphas):
                viz.save_image(st.path(f"seed{s}_alpha{a:+g}.png"), viz.to_uint8(out_imgs[k, i]))
        if frames is not None:
            viz.save_gif(st.path("sweep.gif"), frames, scale=2 if size[0] <= 128 else 1)
        _write_json(st.path("edit.json"), {
            "factors": os.path.abspath(args.factors), "layer": layer, "part": args.part,
            "appearance": args.appearance, "alphas": list(map(float, alphas)), "seeds": args.seeds,
            "refine_steps": args.refine, "roir": {f"{a:+g}": float(r) for a, r in zip(alphas, scores)},
        })
    for a, r in zip(alphas, scores):
        _say(args, f"alpha {a:+g}: ROIR {r:.3f} ({part_desc} as the region of interest)")
    _say(args, f"wrote strip.png, per-seed images{', sweep.gif' if frames else ''} and edit.json in {args.out}")
    return 0


def _background_appearance(masks) -> int:
    """The appearance whose mask covers the image border most and the centre least."""
    import numpy as np

    m = np.asarray(masks, np.float32)  # [N, H, W, K]
    H, W = m.shape[1:3]
    ring = np.ones((H, W), bool)
    bh, bw = max(1, H // 4), max(1, W // 4)
    ring[bh:H - bh, bw:W - bw] = False
    border = m[:, ring].mean(axis=(0, 1))
    centre = m[:, ~ring].mean(axis=(0, 1))
    return int(np.argmax(border - centre))


def _display_masks(sal, thr, size):
    """Masks at image resolution: the saliency upsampled (bilinear), then thresholded."""
    import numpy as np

    from . import viz

    N, _, _, K = sal.shape
    thr = np.broadcast_to(np.asarray(thr, np.float32), (K,))
    return np.stack([np.stack([viz.resize_map(sal[i, :, :, j], size) >= thr[j] for j in range(K)], -1)
                     for i in range(N)])


def _saliency_figures(path, imgs, sal, thr, apps, row_labels, threshold_desc, background=None):
    """Heat maps, masks and (``background`` not None) background removal for the images shown;
    ``sal`` is ``[N, h, w, R_C]``, ``thr`` the threshold per appearance. Masks are shown at
    image resolution (upsampled saliency, thresholded). Returns the background appearance
    used (or None)."""
    from . import viz

    n = len(imgs)
    masks = _display_masks(sal, thr, imgs.shape[1:3])
    cols = ["image"] + [f"appearance {j}" for j in apps]
    heat = [[viz.to_uint8(imgs[i])] + [viz.heatmap_image(imgs[i], sal[i, :, :, j]) for j in apps] for i in range(n)]
    viz.save_labelled_grid(path("heatmaps.png"), heat, row_labels, cols,
                           title="saliency a_j^T Z, each map scaled to its own range (blue low, red high)")
    mk = [[viz.to_uint8(imgs[i])] + [viz.mask_image(imgs[i], masks[i, :, :, j]) for j in apps] for i in range(n)]
    viz.save_labelled_grid(path("masks.png"), mk, row_labels, cols, title=f"masks: saliency >= {threshold_desc}")
    if background is None:
        return None
    b = int(background)
    cells = [[viz.to_uint8(imgs[i]), viz.mask_image(imgs[i], masks[i, :, :, b]),
              viz.cutout_image(imgs[i], ~masks[i, :, :, b])] for i in range(n)]
    viz.save_labelled_grid(path("background_removed.png"), cells, row_labels,
                           ["image", f"appearance {b} mask", "background removed"])
    return b


def _saliency_and_masks(Z, F, threshold):
    """Saliency ``[N, h, w, R_C]``, the threshold per appearance, and the masks at feature resolution."""
    import numpy as np

    import panda_jax as pj

    sal = np.asarray(pj.saliency(Z, F))
    thr = sal.reshape(-1, sal.shape[-1]).mean(axis=0) if threshold == "mean" else np.float32(threshold)
    return sal, thr, np.asarray(pj.localize(sal, threshold=thr))


def cmd_saliency(args):
    import numpy as np

    F, G, layer = _load_factors_for(args)
    apps = args.appearances if args.appearances else list(range(min(F.rank_c, 6)))
    for j in apps + ([args.background] if args.background is not None and args.background >= 0 else []):
        if not 0 <= j < F.rank_c:
            raise ConfigError(f"appearance index {j} is out of range; the factors have {F.rank_c} (use 0..{F.rank_c - 1})")
    lat = _latents_for_seeds(G, args.seeds)
    Z, ctx = _features(G, lat, layer)
    imgs = _render(G, Z, layer, ctx)
    sal, thr, masks = _saliency_and_masks(Z, F, args.threshold)
    bg = args.background
    if bg is not None and bg < 0:
        bg = _background_appearance(masks)
    desc = "each appearance's mean over the samples" if args.threshold == "mean" else f"{args.threshold:g}"
    with _Staging(args.out) as st:
        b = _saliency_figures(st.path, imgs, sal, thr, apps, [f"seed {s}" for s in args.seeds], desc, bg)
        _save_npz(st.path("saliency.npz"), saliency=sal.astype(np.float32), masks=masks, seeds=np.asarray(args.seeds))
    extra = f", background_removed.png (appearance {b})" if b is not None else ""
    _say(args, f"wrote heatmaps.png, masks.png{extra} and saliency.npz in {args.out}")
    return 0


# ---- demo ----------------------------------------------------------------------------------


class _Timer:
    def __init__(self):
        self.rows: list[tuple[str, float]] = []

    def __call__(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                self.t = time.perf_counter()

            def __exit__(self, *exc):
                timer.rows.append((name, time.perf_counter() - self.t))

        return _Ctx()


def _edit_batch(Z, F, edits):
    """Edited features for every ``(part, appearance, alpha)`` in ``edits``: ``[len(edits) * N, ...]``."""
    import jax.numpy as jnp

    import panda_jax as pj

    return jnp.concatenate([pj.edit(Z, F, part=k, appearance=j, alpha=a) for k, j, a in edits])


def cmd_demo(args):
    import jax
    import jax.numpy as jnp
    import numpy as np

    import convert
    import panda_jax as pj
    from convert import readers
    from ported_gens.base import save_generator

    from . import viz

    t_start = time.perf_counter()
    timer = _Timer()
    progress = _show_progress(args)
    src = _source_path(args.checkpoint)
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise ConfigError(f"--out {args.out!r} exists and is not a directory; give a directory path")
    # Everything that can be wrong with the inputs is checked before anything is written.
    with timer("read and convert the checkpoint"):
        G = convert.to_generator(src)
    layer = G.check_layer(args.layer)
    ranks = _check_ranks(G, layer, args.ranks)
    H, W, C = G.layers[layer]
    show = min(args.show, args.samples)
    n_roir = min(16, args.samples)

    with _Staging(args.out) as st:
        _say(args, f"demo: {G.family} {G.config}, layer {layer} ({H}x{W}x{C}), ranks {ranks}, "
                   f"{args.samples} samples, {args.steps} steps -> {args.out}")
        with timer("save the model and its sample grid"):
            save_generator(G, st.path("model"), {"file": os.path.basename(src), "arch": None,
                                                 "sha256": readers.sha256(src)})
            grid, scale = _sample_grid(G, args.seed)
            viz.save_image(st.path("model", "samples.png"), grid, scale=scale)

        with timer("sample features and fit"):
            res, Z, lat = _fit(G, layer, ranks, args.samples, args.steps, args.seed, "auto", 64, progress=progress)
        scale_f = _feature_scale(Z)
        F = res.factors.with_meta(
            model=DEFAULT_MODEL if args.checkpoint == DEFAULT_MODEL else os.path.abspath(src), family=G.family,
            layer=layer, samples=args.samples, steps=res.n_steps, seed=args.seed, lr="auto", method="pgd",
            truncation=1.0, stochastic=False, feature_scale=scale_f)
        pj.save_factors(st.path("factors.npz"), F)
        rel_err = pj.reconstruction_error(Z, F)
        viz.save_loss_curve(st.path("loss.png"), res.losses,
                            title=f"fit at layer {layer}: R_C={ranks[0]}, R_S={ranks[1]}, {args.samples} samples")

        with timer("render the samples shown"):
            _, ctx_all = _features(G, _slice(lat, 0, n_roir), layer)
            Zr = Z[:n_roir]
            imgs_r = _render(G, Zr, layer, ctx_all)
            imgs = imgs_r[:show]
        R = F.rank_s
        parts_maps = np.asarray(F.part_maps())
        labels = [f"sample {i}" for i in range(show)]

        with timer("parts figures"):
            viz.save_parts_grid(st.path("parts.png"), parts_maps, cols=min(R, 8))
            viz.save_overlays(st.path("parts_overlay.png"), imgs, parts_maps, titles=labels, cols=min(show, 4))

        n_ref = min(4, show)
        with timer("refine parts per sample"):
            refined = np.asarray(pj.refine(Z[:n_ref], F, steps=100))
        ref_maps = refined.transpose(0, 2, 1).reshape(n_ref, R, H, W)
        with timer("refined parts figure"):
            both = np.concatenate([np.broadcast_to(parts_maps[None], ref_maps.shape), ref_maps])
            viz.save_overlays(st.path("parts_refined.png"), np.concatenate([imgs[:n_ref], imgs[:n_ref]]), both,
                              titles=[f"sample {i}: global" for i in range(n_ref)]
                              + [f"sample {i}: refined" for i in range(n_ref)], cols=n_ref)

        with timer("saliency, masks, background removal"):
            sal_all, thr, masks_all = _saliency_and_masks(Z, F, "mean")  # thresholds over all fitted samples
            bg = _background_appearance(masks_all)
            apps_sal = list(range(min(F.rank_c, 6)))
            n_sal = min(4, show)
            _saliency_figures(st.path, imgs[:n_sal], sal_all[:n_sal], thr, apps_sal,
                              labels[:n_sal], f"each appearance's mean over the {args.samples} samples", bg)

        alpha = round(EDIT_SCALE * scale_f, 2)
        apps_edit = [j for j in (1, 2, 3) if j < F.rank_c] or [0]
        edits = [(k, j, s * alpha) for k in range(R) for j in apps_edit for s in (-1, 1)]
        with timer(f"{len(edits)} edits x {n_roir} samples: render and ROIR"):
            E = _edit_batch(Zr, F, edits)
            out = _render(G, E, layer, _tile_ctx(ctx_all, len(edits)), progress=progress, desc="edits")
            out = out.reshape((len(edits), n_roir) + imgs_r.shape[1:])
            size = imgs_r.shape[1:3]
            roirs = []
            for e, (k, j, a) in enumerate(edits):
                roirs.append(pj.roir(_part_masks(F, k, size), imgs_r, out[e]))
        with timer("edit grids"):
            cols = ["original"] + [f"a{j} {'-' if s < 0 else '+'}" for j in apps_edit for s in (-1, 1)]
            edit_figs = []
            for i in range(min(2, n_roir)):
                cells = []
                for k in range(R):
                    row = [imgs_r[i]] + [out[e, i] for e, (kk, _, _) in enumerate(edits) if kk == k]
                    cells.append(row)
                name = f"edits_sample{i}.png"
                viz.save_labelled_grid(st.path(name), cells, [f"part {k}" for k in range(R)], cols,
                                       title=f"sample {i}: part k + alpha * appearance j, alpha = {alpha:g}")
                edit_figs.append(name)

        # The sweep: the part strongest at the image centre, with its most local appearance (highest ROIR).
        centre = parts_maps[:, (H - 1) // 2:H // 2 + 1, (W - 1) // 2:W // 2 + 1].mean(axis=(1, 2))
        k_best = int(np.argmax(centre / (parts_maps.max(axis=(1, 2)) + 1e-12)))
        mine = [e for e, (k, _, _) in enumerate(edits) if k == k_best]
        j_best = edits[max(mine, key=lambda e: roirs[e])][1]
        with timer("alpha sweep GIF"):
            n_gif = min(4, n_roir)
            sweep = np.linspace(-alpha, alpha, 15)
            Es = jnp.concatenate([pj.edit(Zr[:n_gif], F, part=k_best, appearance=j_best, alpha=float(a)) for a in sweep])
            fr = _render(G, Es, layer, _tile_ctx(_slice(ctx_all, 0, n_gif), len(sweep)), desc="sweep")
            fr = viz.to_uint8(fr).reshape((len(sweep), n_gif) + imgs_r.shape[1:])
            viz.save_gif(st.path("sweep.gif"), [viz.tile(list(f), cols=n_gif) for f in fr], scale=2)

        total = time.perf_counter() - t_start
        argv = args._argv if args._argv is not None else ["demo"]
        command = " ".join([PROG] + [shlex.quote(a) for a in argv])
        stats = pj.part_stats(F)
        summary = {
            "command": command, "model": G.family, "config": G.config, "layer": layer, "features": [H, W, C],
            "ranks": list(ranks), "samples": args.samples, "steps": res.n_steps, "fit_seconds": res.seconds,
            "loss_first": float(res.losses[0]), "loss_last": float(res.losses[-1]),
            "relative_error": rel_err, "step_sizes": res.lr, "alpha": alpha, "background_appearance": bg, "sweep": {"part": k_best, "appearance": j_best},
            "edits": [{"part": k, "appearance": j, "alpha": a, "roir": float(r)} for (k, j, a), r in zip(edits, roirs)],
            "timings": {name: round(sec, 3) for name, sec in timer.rows}, "total_seconds": round(total, 2),
        }
        _write_json(st.path("summary.json"), summary)
        _demo_report(st.path("index.html"), summary, stats, edit_figs, (k_best, j_best), device=str(jax.devices()[0]))
    _say(args, f"demo finished in {total:.1f} s (fit {res.seconds:.1f} s); open {os.path.join(args.out, 'index.html')}")
    return 0


def _demo_report(path, s, stats, edit_figs, best, device):
    from . import viz

    H, W, C = s["features"]
    rc, rs = s["ranks"]
    roir_rows = [(e["part"], e["appearance"], f"{e['alpha']:+g}", f"{e['roir']:.2f}") for e in s["edits"]]
    part_rows = [(p["part"], f"{p['area']:.2f}", f"({p['centroid'][0]:.1f}, {p['centroid'][1]:.1f})",
                  f"{p['max_overlap']:.2f}") for p in stats["parts"]]
    timing_rows = [(name, f"{sec:.2f}") for name, sec in s["timings"].items()] + [("total", f"{s['total_seconds']:.2f}")]
    sections = [
        {"text": f"PandA on the {s['model']} generator {s['config']}: {rc} appearances and {rs} parts fitted to "
                 f"{s['samples']} feature maps at layer {s['layer']} ({H}x{W}x{C}) in {s['steps']} steps "
                 f"({s['fit_seconds']:.1f} s on {device}). Loss {s['loss_first']:.4g} -> {s['loss_last']:.4g}; "
                 f"relative reconstruction error {s['relative_error']:.3f}. Total run time {s['total_seconds']:.1f} s."},
        {"heading": "Reproduce", "code": s["command"],
         "links": [("factors.npz", "the factors (panda_jax.load_factors)"), ("summary.json", "all numbers as JSON"),
                   ("model/config.json", "the converted model's config")]},
        {"heading": "Samples", "images": [("model/samples.png", "fixed-seed samples of the converted generator")]},
        {"heading": "Parts", "images": [
            ("parts.png", "each part, min-max normalised (white high)"),
            ("parts_overlay.png", "the parts in colour over samples"),
            ("parts_refined.png", "top: global parts; bottom: parts refined per sample (100 steps, appearances fixed)"),
        ], "table": part_rows, "header": ("part", "area (>= half max)", "centroid (row, col)", "max cosine with another part")},
        {"heading": "Fit", "images": [("loss.png", "summed loss per step")]},
        {"heading": "Saliency and masks", "images": [
            ("heatmaps.png", "saliency a_j^T Z_i of the first appearances"),
            ("masks.png", "saliency thresholded at each appearance's mean over all fitted samples"),
            ("background_removed.png", f"background removal with appearance {s['background_appearance']}'s mask, "
                                       "picked automatically (most on the border, least in the centre); a rough "
                                       "example: no appearance of this small DCGAN marks the background cleanly"),
        ]},
        {"heading": "Edits", "text": f"Z' = Z + alpha * a_j p_k^T with alpha = +-{s['alpha']:g} "
                                     f"({EDIT_SCALE} x the mean feature norm per position). Appearance 0, the "
                                     "leading HOSVD direction (close to the mean activation), mostly adds "
                                     "texture artefacts in this model and is left out. ROIR "
                                     "(paper Eq. 7): mean over 16 samples of the change inside the part (its "
                                     "upsampled map >= 0.5) over the change outside; higher is more local.",
         "images": [(f, f"every part with appearances and signed alphas ({f[:-4].replace('_', ' ')})") for f in edit_figs]
         + [("sweep.gif", f"alpha swept from -{s['alpha']:g} to +{s['alpha']:g} at part {best[0]} with appearance "
                          f"{best[1]} (the part strongest at the image centre, with its highest-ROIR appearance)")],
         "table": roir_rows, "header": ("part", "appearance", "alpha", "ROIR")},
        {"heading": "Timings (seconds)", "table": timing_rows, "header": ("stage", "seconds")},
    ]
    viz.write_report(path, "panda-jax demo: parts and appearances of a faces DCGAN", sections)


# ---- parser -------------------------------------------------------------------------------


def _add_common(p):
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors, no progress bars")


def _add_factors_model(p):
    p.add_argument("factors", metavar="FACTORS", help="factors file written by `panda-jax fit` (.npz)")
    p.add_argument("model", metavar="MODEL", nargs="?", default=None,
                   help="converted model directory, checkpoint file or 'default' (default: the model the "
                        "factors were fitted on)")
    p.add_argument("--layer", type=int, default=None, metavar="L",
                   help="layer (default: the one the factors were fitted at)")


class _HelpFormatter(argparse.HelpFormatter):
    """Shows a default where there is a meaningful one."""

    def _get_help_string(self, action):
        h = action.help or ""
        d = action.default
        if action.required or d is None or d is False or d is argparse.SUPPRESS or "default" in h:
            return h
        if isinstance(d, (list, tuple)):
            return h + " (default: " + " ".join(map(str, d)) + ")"
        return h + " (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    fmt = _HelpFormatter
    parser = _Parser(
        prog=PROG,
        description="PandA in JAX: fit parts and appearances to GAN feature maps, then localise and edit. "
                    "Start with `panda-jax demo`.",
        epilog="A MODEL is a directory from `panda-jax convert`, a checkpoint file, or 'default' "
               "(the embedded faces DCGAN). See `panda-jax COMMAND --help`.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("convert", formatter_class=fmt, help="convert a PyTorch checkpoint into a model directory",
                       description="Convert a generator checkpoint into a model directory (config.json + "
                                   "parameters) and render a fixed-seed sample grid OUT/samples.png as a check.")
    p.add_argument("src", metavar="SRC", help="checkpoint file (.pth/.pt/.tar/.pkl), HuggingFace folder, or "
                                              "'default' (the embedded faces DCGAN)")
    p.add_argument("out", metavar="OUT", help="model directory to write: new or empty (an earlier conversion "
                                              "only with --force)")
    p.add_argument("--force", action="store_true", help="replace OUT if it holds an earlier conversion")
    p.add_argument("--arch", metavar="NAME", default=None,
                   help="architecture (family or zoo name, e.g. dcgan) when it cannot be inferred")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample grid")
    p.add_argument("--no-samples", action="store_true", help="skip the sample grid")
    _add_common(p)
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("fit", formatter_class=fmt, help="fit parts and appearances at a layer",
                       description="Sample features at a layer and fit R_C appearances and R_S non-negative "
                                   "parts (PandA, Algorithm 1); write the factors (with the model and layer "
                                   "in their metadata).")
    p.add_argument("model", metavar="MODEL", help="converted model directory, checkpoint file or 'default'")
    p.add_argument("--layer", type=int, required=True, metavar="L", help="layer index (see `panda-jax convert` output)")
    p.add_argument("--ranks", type=_positive_int, nargs=2, metavar=("RC", "RS"), required=True,
                   help="numbers of appearances and parts")
    p.add_argument("--samples", type=_positive_int, default=DEMO_SAMPLES, metavar="N", help="number of sampled feature maps")
    p.add_argument("--steps", type=_positive_int, default=DEMO_STEPS, metavar="T", help="optimisation steps")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (latents and parts init)")
    p.add_argument("--lr", type=_lr, default="auto", help="'auto' (backtracking) or the step size on the summed loss")
    p.add_argument("--batch", type=_positive_int, default=64, metavar="B",
                   help="generator batch when sampling; with --stochastic the fresh batch per step")
    p.add_argument("--method", choices=("pgd", "adam"), default="pgd", help="projected gradient steps or Adam")
    p.add_argument("--truncation", type=float, default=1.0, metavar="PSI", help="truncation of the latents")
    p.add_argument("--stochastic", action="store_true",
                   help="draw a fresh batch of --batch samples every step instead of a fixed set of --samples")
    p.add_argument("--loss-plot", metavar="PNG", default=None, help="also write the loss curve here")
    p.add_argument("--out", required=True, metavar="FILE", help="factors file to write (.npz)")
    _add_common(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("refine", formatter_class=fmt, help="refine the parts for individual samples",
                       description="Refine the parts for each sample with the appearances fixed (paper Eq. 6); "
                                   "write refined.npz and overlays of the global and refined parts.")
    _add_factors_model(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], metavar="S", help="one sample per seed")
    p.add_argument("--steps", type=_positive_int, default=100, help="refinement steps")
    p.add_argument("--lr", type=_lr, default="auto", help="'auto' or a fixed step size")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    _add_common(p)
    p.set_defaults(func=cmd_refine)

    p = sub.add_parser("edit", formatter_class=fmt, help="edit samples at a part with an appearance",
                       description="Add alpha * appearance at a part to the features of each sample and render: "
                                   "a strip per seed (strip.png), the images, ROIR per alpha (edit.json), and "
                                   "optionally an animated alpha sweep (sweep.gif).")
    _add_factors_model(p)
    p.add_argument("--part", type=int, nargs="+", required=True, metavar="K",
                   help="part index; several are summed into one region")
    p.add_argument("--appearance", type=int, required=True, metavar="J", help="appearance index")
    p.add_argument("--alpha", type=float, nargs="+", default=None, metavar="A",
                   help=f"edit strengths (default: -a and +a with a = {EDIT_SCALE} x the mean feature norm)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], metavar="S", help="one sample per seed")
    p.add_argument("--refine", type=int, default=0, metavar="STEPS",
                   help="refine the parts for each sample first (0: use the global parts)")
    p.add_argument("--gif", action="store_true", help="also write sweep.gif, an animated alpha sweep")
    p.add_argument("--gif-frames", type=_positive_int, default=15, metavar="N", help="frames of the sweep")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    _add_common(p)
    p.set_defaults(func=cmd_edit)

    p = sub.add_parser("saliency", formatter_class=fmt, help="saliency maps and masks of appearances",
                       description="Saliency maps a_j^T Z of appearances over samples (heatmaps.png), their "
                                   "thresholded masks (masks.png), optionally background removal, and the "
                                   "maps (saliency.npz).")
    _add_factors_model(p)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3], metavar="S", help="one sample per seed")
    p.add_argument("--appearances", type=int, nargs="+", default=None, metavar="J",
                   help="appearances to show (default: the first six)")
    p.add_argument("--threshold", type=_threshold, default="mean",
                   help="'mean' (each appearance's mean over the samples) or a number")
    p.add_argument("--background", type=int, default=None, metavar="J",
                   help="remove the background marked by appearance J (-1: pick it automatically)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    _add_common(p)
    p.set_defaults(func=cmd_saliency)

    p = sub.add_parser("demo", formatter_class=fmt, help="the whole method on the embedded faces DCGAN",
                       description="Convert the embedded faces DCGAN, fit parts and appearances, refine, "
                                   "localise and edit, and write figures, the factors and index.html into OUT. "
                                   f"Defaults: layer {DEMO_LAYER} (8x8x256), ranks {DEMO_RANKS}, "
                                   f"{DEMO_SAMPLES} samples, {DEMO_STEPS} steps.")
    p.add_argument("--out", default=os.path.join("out", "demo"), metavar="DIR", help="output directory")
    p.add_argument("--checkpoint", default=DEFAULT_MODEL,
                   help="DCGAN-layout checkpoint to use instead of the embedded one")
    p.add_argument("--layer", type=int, default=DEMO_LAYER, help="layer to fit at")
    p.add_argument("--ranks", type=_positive_int, nargs=2, default=list(DEMO_RANKS), metavar=("RC", "RS"),
                   help="numbers of appearances and parts")
    p.add_argument("--samples", type=_positive_int, default=DEMO_SAMPLES, help="samples to fit on")
    p.add_argument("--steps", type=_positive_int, default=DEMO_STEPS, help="fit steps")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--show", type=_positive_int, default=8, help="samples shown in the figures")
    _add_common(p)
    p.set_defaults(func=cmd_demo, _argv=None)
    return parser


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def main(argv=None) -> int:
    """Entry point of the ``panda-jax`` command; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        if args.func is cmd_demo:
            args._argv = argv
        return int(args.func(args) or 0)
    except UsageError as e:
        msg = str(e)
    except PandaError as e:
        msg = str(e)
    except FileNotFoundError as e:
        msg = f"{e.filename or ''}: file not found ({e.strerror}); check the path".lstrip(": ")
    except OSError as e:
        msg = f"{e.filename + ': ' if getattr(e, 'filename', None) else ''}{e.strerror or e}; check the path and permissions"
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    print(f"{PROG}: error: {_one_line(msg)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
