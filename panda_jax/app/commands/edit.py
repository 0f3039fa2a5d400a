"""``panda-jax edit FACTORS [MODEL] --part K --appearance J ...``: edit samples and render."""

from __future__ import annotations

import os

import numpy as np

from panda_jax.errors import ConfigError

from .. import args as A
from .. import pipeline


def add_parser(sub):
    p = sub.add_parser("edit", formatter_class=A.HelpFormatter, help="edit samples at a part with an appearance",
                       description="Add alpha * appearance at a part to the features of each sample and render: "
                                   "a strip per seed (strip.png), the images, ROIR per alpha (edit.json; paper "
                                   "Eq. 7, lower is more local), and optionally an animated sweep (sweep.gif).")
    A.add_factors_model(p)
    p.add_argument("--part", type=int, nargs="+", required=True, metavar="K",
                   help="part index; several are summed into one region")
    p.add_argument("--appearance", type=int, required=True, metavar="J", help="appearance index")
    p.add_argument("--alpha", type=A.real, nargs="+", default=None, metavar="A",
                   help=f"edit strengths (default: -a and +a with a = {pipeline.EDIT_SCALE} x the mean feature norm)")
    A.add_seeds(p)
    p.add_argument("--refine", type=int, default=0, metavar="STEPS",
                   help="refine the parts for each sample first (0: use the global parts)")
    p.add_argument("--gif", action="store_true", help="also write sweep.gif, an animated alpha sweep")
    p.add_argument("--gif-frames", type=A.positive_int, default=15, metavar="N", help="frames of the sweep")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    A.add_common(p)
    p.set_defaults(func=run)


def run(args):
    import jax.numpy as jnp

    import panda_jax as pj
    from panda_jax.refine import refined_factors

    from .. import figures

    pipeline.check_out_dir(args.out)
    if args.refine < 0:
        raise ConfigError(f"--refine {args.refine}: give a number of steps >= 0")
    seeds = A.flatten_seeds(args.seeds)
    F, G, layer = pipeline.load_factors_for(args)
    parts = args.part if len(args.part) > 1 else args.part[0]
    part_desc = f"part {args.part[0]}" if len(args.part) == 1 else "parts " + "+".join(map(str, args.part))
    pj.part_map(F, parts)  # checks the part indices
    if not 0 <= args.appearance < F.rank_c:
        raise ConfigError(f"appearance index {args.appearance} is out of range; the factors have {F.rank_c} "
                          f"(use 0..{F.rank_c - 1})")
    Z, ctx = pipeline.features(G, pipeline.latents_for_seeds(G, seeds), layer)
    alphas = args.alpha
    if alphas is None:
        a = pipeline.auto_alpha(F, Z)
        alphas = [-a, a]
    progress = pipeline.show_progress(args)
    if args.refine:
        per = [refined_factors(F, p) for p in pj.refine(Z, F, steps=args.refine)]
    else:
        per = [F] * len(seeds)
    # One batch for everything: the originals (alpha 0), the edits, and the sweep frames.
    top = max(map(abs, alphas))
    sweep = list(np.linspace(-top, top, args.gif_frames)) if args.gif else []
    strengths = [0.0] + [float(a) for a in alphas] + [float(a) for a in sweep]
    n, K = len(seeds), len(strengths)
    E = jnp.concatenate([pj.edit_sweep(Z[i:i + 1], per[i], part=parts, appearance=args.appearance, alphas=strengths)
                         for i in range(n)], axis=1)  # [K, N, H, W, C]
    out = pipeline.render(G, E.reshape((K * n,) + E.shape[2:]), layer, pipeline.tile_ctx(ctx, K),
                          progress=progress, desc="edits")
    out = out.reshape((K, n) + out.shape[1:])
    imgs, out_imgs = out[0], out[1:1 + len(alphas)]
    size = imgs.shape[1:3]
    masks = np.stack([pipeline.part_masks(f, parts, size) for f in per])
    scores = [float(pj.roir(masks, imgs, out_imgs[k])) for k in range(len(alphas))]
    frames = None
    if sweep:
        fr = figures.to_uint8(out[1 + len(alphas):])
        frames = [figures.tile(list(f), cols=n) for f in fr]
    with pipeline.Staging(args.out) as st:
        cells = [[figures.to_uint8(imgs[i])] + [figures.to_uint8(out_imgs[k, i]) for k in range(len(alphas))]
                 for i in range(n)]
        figures.save_labelled_grid(st.path("strip.png"), cells, [f"seed {s}" for s in seeds],
                                   ["original"] + [f"alpha {a:+g}" for a in alphas],
                                   title=f"{part_desc}, appearance {args.appearance} (layer {layer})")
        for i, s in enumerate(seeds):
            figures.save_image(st.path(f"seed{s}_original.png"), figures.to_uint8(imgs[i]))
            for k, a in enumerate(alphas):
                figures.save_image(st.path(f"seed{s}_alpha{a:+g}.png"), figures.to_uint8(out_imgs[k, i]))
        if frames is not None:
            figures.save_gif(st.path("sweep.gif"), frames, scale=2 if size[0] <= 128 else 1)
        pipeline.write_json(st.path("edit.json"), {
            "factors": os.path.abspath(args.factors), "layer": layer, "part": args.part,
            "appearance": args.appearance, "alphas": list(map(float, alphas)), "seeds": seeds,
            "refine_steps": args.refine, "roir": {f"{a:+g}": r for a, r in zip(alphas, scores)},
            "roir_definition": "paper Eq. 7: change outside the part over change inside (Frobenius); lower is more local",
        })
    for a, r in zip(alphas, scores):
        pipeline.say(args, f"alpha {a:+g}: ROIR {r:.3f} ({part_desc} as the region of interest; lower is more local)")
    pipeline.say(args, f"wrote strip.png, per-seed images{', sweep.gif' if frames else ''} and edit.json in {args.out}")
    return 0
