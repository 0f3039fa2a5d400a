"""``panda-jax refine FACTORS [MODEL] --seeds ... --out DIR``: parts refined per sample (Eq. 6)."""

from __future__ import annotations

import time

import numpy as np

from .. import args as A
from .. import pipeline


def add_parser(sub):
    p = sub.add_parser("refine", formatter_class=A.HelpFormatter, help="refine the parts for individual samples",
                       description="Refine the parts for each sample with the appearances fixed (paper Eq. 6); "
                                   "write refined.npz and overlays of the global and refined parts.")
    A.add_factors_model(p)
    A.add_seeds(p)
    p.add_argument("--steps", type=A.positive_int, default=100, help="refinement steps")
    p.add_argument("--lr", type=A.lr, default="auto", help="'auto' or a fixed step size")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    A.add_common(p)
    p.set_defaults(func=run)


def run(args):
    import panda_jax as pj

    from .. import figures

    pipeline.check_out_dir(args.out)
    seeds = A.flatten_seeds(args.seeds)
    F, G, layer = pipeline.load_factors_for(args)
    Z, ctx = pipeline.features(G, pipeline.latents_for_seeds(G, seeds), layer)
    t0 = time.perf_counter()
    parts = np.asarray(pj.refine(Z, F, steps=args.steps, lr=args.lr))
    secs = time.perf_counter() - t0
    imgs = pipeline.render(G, Z, layer, ctx)
    R, h, w = F.rank_s, F.height, F.width
    maps = parts.transpose(0, 2, 1).reshape(len(seeds), R, h, w)
    glob = np.asarray(F.part_maps())
    with pipeline.Staging(args.out) as st:
        pipeline.save_npz(st.path("refined.npz"), parts=parts.astype(np.float32), seeds=np.asarray(seeds),
                          height=np.int64(h), width=np.int64(w))
        figures.save_overlays(st.path("parts_global.png"), imgs, glob, titles=[f"seed {s}" for s in seeds])
        figures.save_overlays(st.path("parts_refined.png"), imgs, maps, titles=[f"seed {s} refined" for s in seeds])
    pipeline.say(args, f"refined the parts of {len(seeds)} samples in {secs:.1f} s; wrote refined.npz, "
                       f"parts_global.png, parts_refined.png in {args.out}")
    return 0
