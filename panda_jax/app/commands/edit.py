"""``panda-jax edit FACTORS [MODEL] --part K --appearance J ...``: edit samples and render.

``panda-jax edit [FACTORS] --recipe R.json --seeds 0-63 --out DIR`` applies a stack of edits
saved by the editor (``panda-jax serve``; format in :mod:`panda_jax.app.recipe`) to every seed
in one batch; the recipe names its factors and model, so FACTORS and MODEL may be left out.

``panda-jax edit MODEL --direction FILE [--component K] [--alpha A ...] --out DIR`` moves the
latents along a published direction (ReSeFa ``.npy``, GANSpace or SeFa ``.npz``; read by
:func:`panda_jax.directions.load_directions`) with the baselines' latent edit.
"""

from __future__ import annotations

import os

import numpy as np

from panda_jax.errors import ConfigError

from .. import args as A
from .. import pipeline


DIRECTION_ALPHAS = (-3.0, 3.0)  # SeFa's default distances


def add_parser(sub):
    p = sub.add_parser("edit", formatter_class=A.HelpFormatter, help="edit samples at a part with an appearance",
                       description="Add alpha * appearance at a part to the features of each sample and render: "
                                   "a strip per seed (strip.png), the images, ROIR per alpha (edit.json; paper "
                                   "Eq. 7, lower is more local), and optionally an animated sweep (sweep.gif).")
    A.add_factors_model(p, "factors file written by `panda-jax fit` (.npz); with --recipe, default: the recipe's",
                        optional=True)
    p.add_argument("--part", type=int, nargs="+", default=None, metavar="K",
                   help="part index; several are summed into one region (required without --recipe)")
    p.add_argument("--appearance", type=int, default=None, metavar="J",
                   help="appearance index (required without --recipe)")
    p.add_argument("--recipe", metavar="R.json", default=None,
                   help="apply the edit stack of a recipe exported by `panda-jax serve` instead of --part/--appearance")
    p.add_argument("--direction", metavar="FILE", default=None,
                   help="instead of factors, move the latent along a published direction: a .npy array (ReSeFa's "
                        "files, [K, D] boundaries), GANSpace components (.npz with lat_comp) or SeFa's "
                        "(layers, boundaries, values) as .npz; give MODEL as the only positional argument")
    p.add_argument("--component", type=int, default=0, metavar="K",
                   help="with --direction: the direction's row in the file (default: 0)")
    p.add_argument("--rows", type=A.rows, default=None, metavar="ROWS",
                   help="with --direction in w: the w+ rows to move, e.g. 4-7 or 0,2,5 (ReSeFa's --mani_layers; "
                        "default: the file's, else all)")
    p.add_argument("--space", choices=("z", "w", "w+"), default=None,
                   help="with --direction: the latent space of the file's directions (default: what the file "
                        "says, else w where the model has one, else z)")
    p.add_argument("--alpha", type=A.real, nargs="+", default=None, metavar="A",
                   help=f"edit strengths (default: -a and +a with a = {pipeline.EDIT_SCALE} x the mean feature norm; "
                        f"with --direction: {DIRECTION_ALPHAS[0]:g} {DIRECTION_ALPHAS[1]:+g}, latent distances, in "
                        "standard deviations for GANSpace components)")
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
    if args.direction is not None:
        return run_direction(args)
    given = [o for o, v in (("--component", args.component or None), ("--rows", args.rows), ("--space", args.space))
             if v is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} only apply with --direction FILE")
    if args.recipe is not None:
        given = [o for o, v in (("--part", args.part), ("--appearance", args.appearance), ("--alpha", args.alpha),
                                ("--refine", args.refine or None), ("--gif", args.gif or None)) if v is not None]
        if given:
            raise ConfigError(f"--recipe carries the edits; drop {', '.join(given)}")
        return run_recipe(args)
    if args.factors is None:
        raise ConfigError("give FACTORS (a file written by `panda-jax fit`), or --recipe R.json")
    if args.part is None or args.appearance is None:
        raise ConfigError("give --part K and --appearance J (or --recipe R.json from `panda-jax serve`)")
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


RECIPE_STRIP = 16  # rows shown in strip.png; every seed gets its own images


def run_recipe(args):
    import jax.numpy as jnp

    import panda_jax as pj
    from panda_jax.refine import refined_factors

    from .. import figures, recipe

    R = recipe.load(args.recipe)
    path = args.factors if args.factors is not None else R["factors"]["file"]
    if not os.path.isfile(path):
        raise ConfigError(f"the recipe's factors {path!r} do not exist; give FACTORS (the same factors file)")
    F = pj.load_factors(path)
    recipe.check_factors(R, F, path)
    if args.layer is not None and args.layer != R["layer"]:
        raise ConfigError(f"--layer {args.layer} differs from the recipe's layer {R['layer']}; drop --layer")
    G = pipeline.load_model(args.model if args.model is not None else R["model"])
    layer = G.check_layer(R["layer"])
    if tuple(G.layers[layer]) != (F.height, F.width, F.channels):
        raise ConfigError(f"layer {layer} of this {G.family} is {G.layers[layer]}, the recipe's factors are for "
                          f"{(F.height, F.width, F.channels)}; give the model the recipe was made on")
    seeds = A.flatten_seeds(args.seeds)
    edits = R["edits"]
    Z, ctx = pipeline.features(G, pipeline.latents_for_seeds(G, seeds), layer, R["truncation"])
    refined = pj.refine(Z, F, steps=R["refine_steps"]) if R["refine_steps"] else None
    step = pipeline.RENDER_BATCH
    E = jnp.concatenate([recipe.apply(Z[i:i + step], F, edits, None if refined is None else refined[i:i + step])
                         for i in range(0, len(seeds), step)])
    progress = pipeline.show_progress(args)
    both = pipeline.render(G, jnp.concatenate([Z, E]), layer, pipeline.tile_ctx(ctx, 2), progress=progress,
                           desc="edits")
    imgs, out = both[:len(seeds)], both[len(seeds):]
    size = imgs.shape[1:3]
    scores = []
    for i in range(len(seeds)):
        Fi = F if refined is None else refined_factors(F, refined[i])
        region = recipe.region(Fi, edits, size)
        ok = region.any() and not region.all() and not np.array_equal(imgs[i], out[i])
        scores.append(float(pj.roir(region, imgs[i], out[i])) if ok else None)
    with pipeline.Staging(args.out) as st:
        n = min(len(seeds), RECIPE_STRIP)
        cells = [[figures.to_uint8(imgs[i]), figures.to_uint8(out[i])] for i in range(n)]
        more = f" (first {n} of {len(seeds)} seeds)" if n < len(seeds) else ""
        figures.save_labelled_grid(st.path("strip.png"), cells, [f"seed {s}" for s in seeds[:n]], ["original", "edited"],
                                   title=f"recipe {os.path.basename(args.recipe)}: {len(edits)} edits at layer {layer}{more}")
        for i, s in enumerate(seeds):
            figures.save_image(st.path(f"seed{s}_original.png"), figures.to_uint8(imgs[i]))
            figures.save_image(st.path(f"seed{s}_edited.png"), figures.to_uint8(out[i]))
        valid = [r for r in scores if r is not None]
        pipeline.write_json(st.path("edit.json"), {
            "recipe": os.path.abspath(args.recipe), "recipe_sha256": recipe.file_sha256(args.recipe),
            "factors": os.path.abspath(path), "layer": layer, "seeds": seeds, "edits": len(edits),
            "refine_steps": R["refine_steps"], "roir": {str(s): r for s, r in zip(seeds, scores)},
            "roir_mean": float(np.mean(valid)) if valid else None,
            "roir_definition": "paper Eq. 7 over the union of the edits' regions: change outside over change "
                               "inside (Frobenius); lower is more local",
        })
    mean = f"; mean ROIR {np.mean(valid):.3f} over the union of the edits' regions" if valid else ""
    pipeline.say(args, f"applied {len(edits)} edits to {len(seeds)} seeds{mean}; wrote strip.png, "
                       f"seed*_original.png, seed*_edited.png and edit.json in {args.out}")
    return 0


def run_direction(args):
    """``--direction FILE``: the samples moved along one published latent direction."""
    import hashlib

    from panda_jax import directions as D

    from .. import baselines, figures

    given = [o for o, v in (("--part", args.part), ("--appearance", args.appearance), ("--recipe", args.recipe),
                            ("--refine", args.refine or None), ("--layer", args.layer)) if v is not None]
    if given:
        raise ConfigError(f"--direction edits the latent; drop {', '.join(given)} (they are for factors)")
    if args.model is not None:
        raise ConfigError(f"with --direction give MODEL only, not FACTORS and MODEL ({args.factors!r} {args.model!r})")
    spec = args.factors if args.factors is not None else None
    if spec is None:
        raise ConfigError("--direction needs MODEL: a directory from `panda-jax convert`, a zoo name or 'default'")
    d = D.load_directions(args.direction)
    k = d.check_component(args.component)
    seeds = A.flatten_seeds(args.seeds)
    G = pipeline.load_model(spec)
    edit = baselines.from_published(G, d, space=args.space, layers=args.rows)
    alphas = [float(a) for a in (args.alpha if args.alpha is not None else DIRECTION_ALPHAS)]
    step = d.step(k)
    lat = pipeline.latents_for_seeds(G, seeds)
    top = max(map(abs, alphas))
    sweep = [float(a) for a in np.linspace(-top, top, args.gif_frames)] if args.gif else []
    strengths = [0.0] + alphas + sweep
    n, batch = len(seeds), pipeline.RENDER_BATCH
    out = np.stack([
        np.concatenate([np.asarray(baselines.edited_images(G, pipeline.slice_tree(lat, i, i + batch), edit, k, a * step))
                        for i in range(0, n, batch)])
        for a in pipeline.bar(strengths, desc="edits", enabled=pipeline.show_progress(args))
    ])  # [strengths, N, H, W, 3]
    imgs, out_imgs = out[0], out[1:1 + len(alphas)]
    size = imgs.shape[1:3]
    with open(args.direction, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    unit = "standard deviations (GANSpace lat_stdev)" if d.stdev is not None else "latent distance"
    where = f"{edit.space}" + (f" rows {list(edit.rows)}" if edit.rows is not None else "")
    with pipeline.Staging(args.out) as st:
        cells = [[figures.to_uint8(imgs[i])] + [figures.to_uint8(out_imgs[j, i]) for j in range(len(alphas))]
                 for i in range(n)]
        figures.save_labelled_grid(st.path("strip.png"), cells, [f"seed {s}" for s in seeds],
                                   ["original"] + [f"alpha {a:+g}" for a in alphas],
                                   title=f"{os.path.basename(args.direction)} component {k} ({d.format}, {where})")
        for i, s in enumerate(seeds):
            figures.save_image(st.path(f"seed{s}_original.png"), figures.to_uint8(imgs[i]))
            for j, a in enumerate(alphas):
                figures.save_image(st.path(f"seed{s}_alpha{a:+g}.png"), figures.to_uint8(out_imgs[j, i]))
        if sweep:
            fr = figures.to_uint8(out[1 + len(alphas):])
            figures.save_gif(st.path("sweep.gif"), [figures.tile(list(f), cols=n) for f in fr],
                             scale=2 if size[0] <= 128 else 1)
        pipeline.write_json(st.path("edit.json"), {
            "direction": os.path.abspath(args.direction), "direction_sha256": sha, "format": d.format,
            "component": k, "directions_in_file": len(d), "space": edit.space,
            "rows": None if edit.rows is None else list(edit.rows), "model": pipeline.model_name(spec),
            "alphas": alphas, "alpha_unit": unit, "latent_distances": [a * step for a in alphas],
            "direction_norm": float(np.linalg.norm(d.directions[k])),
            "value": None if d.values is None else float(d.values[k]), "seeds": seeds,
        })
    pipeline.say(args, f"moved {n} seeds along component {k} of {args.direction} ({d.format}, {where}) by "
                       f"{', '.join(f'{a:+g}' for a in alphas)} ({unit}); wrote strip.png, per-seed images"
                       f"{', sweep.gif' if sweep else ''} and edit.json in {args.out}")
    return 0
