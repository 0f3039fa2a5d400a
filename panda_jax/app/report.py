"""The demo's HTML report (the page itself is written by :func:`figures.write_report`)."""

from __future__ import annotations

from . import pipeline


def demo_report(path, s, stats, edit_figs, best, device):
    from . import figures

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
                                     f"({pipeline.EDIT_SCALE} x the mean feature norm per position). Appearance 0, the "
                                     "leading HOSVD direction (close to the mean activation), mostly adds "
                                     "texture artefacts in this model and is left out. ROIR "
                                     "(paper Eq. 7): mean over 16 samples of the change outside the part (its "
                                     "upsampled map >= 0.5 is the region) over the change inside, Frobenius "
                                     "norms; lower is more local (the paper's Table 2 reports 1.12-1.25 for "
                                     "PandA on StyleGAN2).",
         "images": [(f, f"every part with appearances and signed alphas ({f[:-4].replace('_', ' ')})") for f in edit_figs]
         + [("sweep.gif", f"alpha swept from -{s['alpha']:g} to +{s['alpha']:g} at part {best[0]} with appearance "
                          f"{best[1]} (the part strongest at the image centre, with its lowest-ROIR, most local, appearance)")],
         "table": roir_rows, "header": ("part", "appearance", "alpha", "ROIR")},
        {"heading": "Timings (seconds)", "table": timing_rows, "header": ("stage", "seconds")},
    ]
    figures.write_report(path, "panda-jax demo: parts and appearances of a faces DCGAN", sections)
