"""``panda-jax demo``: the whole method on the embedded faces DCGAN, with an HTML report."""

from __future__ import annotations

import os
import shlex
import time

from .. import args as A
from .. import pipeline
from .saliency import background_appearance, saliency_and_masks, saliency_figures

PROG = "panda-jax"
# The demo's defaults: see `demo --help` and the report it writes.
DEMO_LAYER, DEMO_RANKS, DEMO_SAMPLES, DEMO_STEPS = 2, (32, 8), 128, 200


def add_parser(sub):
    p = sub.add_parser("demo", formatter_class=A.HelpFormatter, help="the whole method on the embedded faces DCGAN",
                       description="Convert the embedded faces DCGAN, fit parts and appearances, refine, "
                                   "localise and edit, and write figures, the factors and index.html into OUT. "
                                   f"Defaults: layer {DEMO_LAYER} (8x8x256), ranks {DEMO_RANKS}, "
                                   f"{DEMO_SAMPLES} samples, {DEMO_STEPS} steps.")
    p.add_argument("--out", default=os.path.join("out", "demo"), metavar="DIR", help="output directory")
    p.add_argument("--checkpoint", default=pipeline.DEFAULT_MODEL,
                   help="DCGAN-layout checkpoint to use instead of the embedded one")
    p.add_argument("--layer", type=int, default=DEMO_LAYER, help="layer to fit at")
    p.add_argument("--ranks", type=A.positive_int, nargs=2, default=list(DEMO_RANKS), metavar=("RC", "RS"),
                   help="numbers of appearances and parts")
    p.add_argument("--samples", type=A.positive_int, default=DEMO_SAMPLES, help="samples to fit on")
    p.add_argument("--steps", type=A.positive_int, default=DEMO_STEPS, help="fit steps")
    p.add_argument("--seed", type=A.seed, default=0, help="random seed")
    p.add_argument("--show", type=A.positive_int, default=8, help="samples shown in the figures")
    A.add_common(p)
    p.set_defaults(func=run, _argv=None)


class Timer:
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


def edit_batch(Z, F, edits):
    """Edited features for every ``(part, appearance, alpha)`` in ``edits``: ``[len(edits) * N, ...]``."""
    import jax.numpy as jnp

    import panda_jax as pj

    return jnp.concatenate([pj.edit(Z, F, part=k, appearance=j, alpha=a) for k, j, a in edits])


def run(args):
    import jax
    import jax.numpy as jnp
    import numpy as np

    import convert
    import panda_jax as pj
    from convert import readers
    from ported_gens.base import save_generator

    from .. import figures, report

    t_start = time.perf_counter()
    timer = Timer()
    progress = pipeline.show_progress(args)
    src = pipeline.source_path(args.checkpoint)
    pipeline.check_out_dir(args.out)
    # Everything that can be wrong with the inputs is checked before anything is written.
    with timer("read and convert the checkpoint"):
        G = convert.to_generator(src)
    layer = G.check_layer(args.layer)
    ranks = pipeline.check_ranks(G, layer, args.ranks)
    H, W, C = G.layers[layer]
    show = min(args.show, args.samples)
    n_roir = min(16, args.samples)

    with pipeline.Staging(args.out) as st:
        pipeline.say(args, f"demo: {G.family} {G.config}, layer {layer} ({H}x{W}x{C}), ranks {ranks}, "
                   f"{args.samples} samples, {args.steps} steps -> {args.out}")
        with timer("save the model and its sample grid"):
            save_generator(G, st.path("model"), {"file": os.path.basename(src), "arch": None,
                                                 "sha256": readers.sha256(src)})
            grid, scale = pipeline.sample_grid(G, args.seed)
            figures.save_image(st.path("model", "samples.png"), grid, scale=scale)

        with timer("sample features and fit"):
            res, Z, lat = pipeline.fit_on_generator(G, layer, ranks, args.samples, args.steps, args.seed, "auto", 64, progress=progress)
        scale_f = pipeline.feature_scale(Z)
        F = res.factors.with_meta(
            model=pipeline.DEFAULT_MODEL if args.checkpoint == pipeline.DEFAULT_MODEL else os.path.abspath(src), family=G.family,
            layer=layer, samples=args.samples, steps=res.n_steps, seed=args.seed, lr="auto", method="pgd",
            truncation=1.0, stochastic=False, feature_scale=scale_f)
        pj.save_factors(st.path("factors.npz"), F)
        rel_err = float(pj.reconstruction_error(Z, F))
        figures.save_loss_curve(st.path("loss.png"), res.losses,
                            title=f"fit at layer {layer}: R_C={ranks[0]}, R_S={ranks[1]}, {args.samples} samples")

        with timer("render the samples shown"):
            _, ctx_all = pipeline.features(G, pipeline.slice_tree(lat, 0, n_roir), layer)
            Zr = Z[:n_roir]
            imgs_r = pipeline.render(G, Zr, layer, ctx_all)
            imgs = imgs_r[:show]
        R = F.rank_s
        parts_maps = np.asarray(F.part_maps())
        labels = [f"sample {i}" for i in range(show)]

        with timer("parts figures"):
            figures.save_parts_grid(st.path("parts.png"), parts_maps, cols=min(R, 8))
            figures.save_overlays(st.path("parts_overlay.png"), imgs, parts_maps, titles=labels, cols=min(show, 4))

        n_ref = min(4, show)
        with timer("refine parts per sample"):
            refined = np.asarray(pj.refine(Z[:n_ref], F, steps=100))
        ref_maps = refined.transpose(0, 2, 1).reshape(n_ref, R, H, W)
        with timer("refined parts figure"):
            both = np.concatenate([np.broadcast_to(parts_maps[None], ref_maps.shape), ref_maps])
            figures.save_overlays(st.path("parts_refined.png"), np.concatenate([imgs[:n_ref], imgs[:n_ref]]), both,
                              titles=[f"sample {i}: global" for i in range(n_ref)]
                              + [f"sample {i}: refined" for i in range(n_ref)], cols=n_ref)

        with timer("saliency, masks, background removal"):
            sal_all, thr, masks_all = saliency_and_masks(Z, F, "mean")  # thresholds over all fitted samples
            bg = background_appearance(masks_all)
            apps_sal = list(range(min(F.rank_c, 6)))
            n_sal = min(4, show)
            saliency_figures(st.path, imgs[:n_sal], sal_all[:n_sal], thr, apps_sal,
                              labels[:n_sal], f"each appearance's mean over the {args.samples} samples", bg)

        alpha = round(pipeline.EDIT_SCALE * scale_f, 2)
        apps_edit = [j for j in (1, 2, 3) if j < F.rank_c] or [0]
        edits = [(k, j, s * alpha) for k in range(R) for j in apps_edit for s in (-1, 1)]
        with timer(f"{len(edits)} edits x {n_roir} samples: render and ROIR"):
            E = edit_batch(Zr, F, edits)
            out = pipeline.render(G, E, layer, pipeline.tile_ctx(ctx_all, len(edits)), progress=progress, desc="edits")
            out = out.reshape((len(edits), n_roir) + imgs_r.shape[1:])
            size = imgs_r.shape[1:3]
            roirs = []
            for e, (k, j, a) in enumerate(edits):
                roirs.append(float(pj.roir(pipeline.part_masks(F, k, size), imgs_r, out[e])))
        with timer("edit grids"):
            cols = ["original"] + [f"a{j} {'-' if s < 0 else '+'}" for j in apps_edit for s in (-1, 1)]
            edit_figs = []
            for i in range(min(2, n_roir)):
                cells = []
                for k in range(R):
                    row = [imgs_r[i]] + [out[e, i] for e, (kk, _, _) in enumerate(edits) if kk == k]
                    cells.append(row)
                name = f"edits_sample{i}.png"
                figures.save_labelled_grid(st.path(name), cells, [f"part {k}" for k in range(R)], cols,
                                       title=f"sample {i}: part k + alpha * appearance j, alpha = {alpha:g}")
                edit_figs.append(name)

        # The sweep: the part strongest at the image centre, with its most local appearance (lowest ROIR).
        centre = parts_maps[:, (H - 1) // 2:H // 2 + 1, (W - 1) // 2:W // 2 + 1].mean(axis=(1, 2))
        k_best = int(np.argmax(centre / (parts_maps.max(axis=(1, 2)) + 1e-12)))
        mine = [e for e, (k, _, _) in enumerate(edits) if k == k_best]
        j_best = edits[min(mine, key=lambda e: roirs[e])][1]
        with timer("alpha sweep GIF"):
            n_gif = min(4, n_roir)
            sweep = np.linspace(-alpha, alpha, 15)
            Es = jnp.concatenate([pj.edit(Zr[:n_gif], F, part=k_best, appearance=j_best, alpha=float(a)) for a in sweep])
            fr = pipeline.render(G, Es, layer, pipeline.tile_ctx(pipeline.slice_tree(ctx_all, 0, n_gif), len(sweep)), desc="sweep")
            fr = figures.to_uint8(fr).reshape((len(sweep), n_gif) + imgs_r.shape[1:])
            figures.save_gif(st.path("sweep.gif"), [figures.tile(list(f), cols=n_gif) for f in fr], scale=2)

        total = time.perf_counter() - t_start
        argv = args._argv if args._argv is not None else ["demo"]
        command = " ".join([PROG] + [shlex.quote(a) for a in argv])
        stats = pj.part_stats(F)
        summary = {
            "command": command, "model": G.family, "config": G.config, "layer": layer, "features": [H, W, C],
            "ranks": list(ranks), "samples": args.samples, "steps": res.n_steps, "fit_seconds": res.seconds,
            "loss_first": float(res.losses[0]), "loss_last": float(res.losses[-1]),
            "relative_error": rel_err, "step_sizes": res.lr, "alpha": alpha, "background_appearance": bg, "sweep": {"part": k_best, "appearance": j_best},
            "edits": [{"part": k, "appearance": j, "alpha": a, "roir": r} for (k, j, a), r in zip(edits, roirs)],
            "timings": {name: round(sec, 3) for name, sec in timer.rows}, "total_seconds": round(total, 2),
        }
        pipeline.write_json(st.path("summary.json"), summary)
        report.demo_report(st.path("index.html"), summary, stats, edit_figs, (k_best, j_best), device=str(jax.devices()[0]))
    pipeline.say(args, f"demo finished in {total:.1f} s (fit {res.seconds:.1f} s); open {os.path.join(args.out, 'index.html')}")
    return 0
