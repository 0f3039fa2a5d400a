"""``panda-jax saliency FACTORS [MODEL] ...``: saliency maps, masks, background removal."""

from __future__ import annotations

import numpy as np

from panda_jax.errors import ConfigError

from .. import args as A
from .. import pipeline


def add_parser(sub):
    p = sub.add_parser("saliency", formatter_class=A.HelpFormatter, help="saliency maps and masks of appearances",
                       description="Saliency maps a_j^T Z of appearances over samples (heatmaps.png), their "
                                   "thresholded masks (masks.png), optionally background removal, and the "
                                   "maps (saliency.npz).")
    A.add_factors_model(p)
    A.add_seeds(p)
    p.add_argument("--appearances", type=int, nargs="+", default=None, metavar="J",
                   help="appearances to show (default: the first six)")
    p.add_argument("--threshold", type=A.threshold, default="mean",
                   help="'mean' (each appearance's mean over the samples) or a number")
    p.add_argument("--background", type=int, default=None, metavar="J",
                   help="remove the background marked by appearance J (-1: pick it automatically)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    A.add_common(p)
    p.set_defaults(func=run)


def background_appearance(masks) -> int:
    """The appearance whose mask covers the image border most and the centre least."""
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
    from .. import figures

    N, _, _, K = sal.shape
    thr = np.broadcast_to(np.asarray(thr, np.float32), (K,))
    return np.stack([np.stack([figures.resize_map(sal[i, :, :, j], size) >= thr[j] for j in range(K)], -1)
                     for i in range(N)])


def saliency_figures(path, imgs, sal, thr, apps, row_labels, threshold_desc, background=None):
    """Heat maps, masks and (``background`` not None) background removal for the images shown;
    ``sal`` is ``[N, h, w, R_C]``, ``thr`` the threshold per appearance. Masks are shown at
    image resolution (upsampled saliency, thresholded). Returns the background appearance
    used (or None)."""
    from .. import figures

    n = len(imgs)
    masks = _display_masks(sal, thr, imgs.shape[1:3])
    cols = ["image"] + [f"appearance {j}" for j in apps]
    heat = [[figures.to_uint8(imgs[i])] + [figures.heatmap_image(imgs[i], sal[i, :, :, j]) for j in apps] for i in range(n)]
    figures.save_labelled_grid(path("heatmaps.png"), heat, row_labels, cols,
                           title="saliency a_j^T Z, each map scaled to its own range (blue low, red high)")
    mk = [[figures.to_uint8(imgs[i])] + [figures.mask_image(imgs[i], masks[i, :, :, j]) for j in apps] for i in range(n)]
    figures.save_labelled_grid(path("masks.png"), mk, row_labels, cols, title=f"masks: saliency >= {threshold_desc}")
    if background is None:
        return None
    b = int(background)
    cells = [[figures.to_uint8(imgs[i]), figures.mask_image(imgs[i], masks[i, :, :, b]),
              figures.cutout_image(imgs[i], ~masks[i, :, :, b])] for i in range(n)]
    figures.save_labelled_grid(path("background_removed.png"), cells, row_labels,
                           ["image", f"appearance {b} mask", "background removed"])
    return b


def saliency_and_masks(Z, F, threshold):
    """Saliency ``[N, h, w, R_C]``, the threshold per appearance, and the masks at feature resolution."""
    import panda_jax as pj

    sal = np.asarray(pj.saliency(Z, F))
    thr = sal.reshape(-1, sal.shape[-1]).mean(axis=0) if threshold == "mean" else np.float32(threshold)
    return sal, thr, np.asarray(pj.localize(sal, threshold=thr))


def run(args):
    pipeline.check_out_dir(args.out)
    seeds = A.flatten_seeds(args.seeds)
    F, G, layer = pipeline.load_factors_for(args)
    apps = args.appearances if args.appearances else list(range(min(F.rank_c, 6)))
    for j in apps + ([args.background] if args.background is not None and args.background >= 0 else []):
        if not 0 <= j < F.rank_c:
            raise ConfigError(f"appearance index {j} is out of range; the factors have {F.rank_c} (use 0..{F.rank_c - 1})")
    Z, ctx = pipeline.features(G, pipeline.latents_for_seeds(G, seeds), layer)
    imgs = pipeline.render(G, Z, layer, ctx)
    sal, thr, masks = saliency_and_masks(Z, F, args.threshold)
    bg = args.background
    if bg is not None and bg < 0:
        bg = background_appearance(masks)
    desc = "each appearance's mean over the samples" if args.threshold == "mean" else f"{args.threshold:g}"
    with pipeline.Staging(args.out) as st:
        b = saliency_figures(st.path, imgs, sal, thr, apps, [f"seed {s}" for s in seeds], desc, bg)
        pipeline.save_npz(st.path("saliency.npz"), saliency=sal.astype(np.float32), masks=masks, seeds=np.asarray(seeds))
    extra = f", background_removed.png (appearance {b})" if b is not None else ""
    pipeline.say(args, f"wrote heatmaps.png, masks.png{extra} and saliency.npz in {args.out}")
    return 0
