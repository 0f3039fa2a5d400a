"""Is PandA more local than GANSpace, SeFa and ReSeFa? The paper's Table 2 design on the faces DCGAN.

    python -m benchmarks.locality [--quick] [--out DIR] [--write-results]

Regions of interest (eyes, nose, mouth) are fixed boxes on the aligned 64x64 face layout
(:data:`REGIONS`). For each method and region the method's best direction is chosen on a
selection set of samples (PandA: the part overlapping the region most, with its most local
appearance; GANSpace and SeFa: the best of their top-k components; ReSeFa: its top direction for
the region), each sign tried. Every edit is then scaled so that its mean change inside the
region (per-pixel RMS) is the same for all methods, and measured on separate evaluation samples:
ROIR (paper Eq. 7, lower = more local) and the Laplacian-pyramid SWD between the edited and the
original images (x 1e3; lower = closer to the original distribution). Each method's discovery
step is timed. Writes ``DIR/locality.json``, ``DIR/locality.md`` and ``DIR/locality.png``;
``--write-results`` also replaces the locality section of ``benchmarks/RESULTS.md`` (and its figure
in ``benchmarks/results/``).

Also times the ReSeFa Jacobian (one image with respect to z) against
``torch.autograd.functional.jacobian`` on the same DCGAN in PyTorch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import numpy as np

import panda_jax as pj
from panda_jax.app import baselines, figures, pipeline

# (row0, row1, col0, col1) on the 64x64 aligned faces, read off the mean face of 64 samples.
REGIONS = {"eyes": (22, 33, 12, 52), "nose": (31, 43, 26, 38), "mouth": (43, 54, 21, 43)}
METHODS = ("PandA", "GANSpace", "SeFa", "ReSeFa")
# The paper's Table 2 (StyleGAN2 FFHQ, ROIR, lower is more local), as ranges over its regions.
PAPER = {"PandA": "1.12-1.25", "GANSpace": "3.12-4.95", "SeFa": "3.50-6.82", "ReSeFa": "not in Table 2"}

PLANS = {
    "quick": dict(select=8, evaluate=32, fit_samples=64, fit_steps=100, ganspace_samples=4096, k=6,
                  resefa_samples=4, target=0.25, swd_per_image=32, show=3, select_iters=2, jacobian_repeat=1),
    "full": dict(select=64, evaluate=1000, fit_samples=256, fit_steps=300, ganspace_samples=100_000, k=10,
                 resefa_samples=32, target=0.25, swd_per_image=128, show=4, select_iters=4, jacobian_repeat=3),
}
LAYER, RANKS = 2, (32, 8)


def box_mask(region, size=(64, 64)):
    r0, r1, c0, c1 = REGIONS[region]
    m = np.zeros(size, np.float32)
    m[r0:r1, c0:c1] = 1.0
    return m


def inside_rms(mask, x, y):
    """Mean over samples of the per-pixel RMS change inside the region."""
    d = np.asarray(y, np.float64) - np.asarray(x, np.float64)
    m = mask[None, :, :, None]
    return float(np.mean(np.sqrt((m * d ** 2).sum(axis=(1, 2, 3)) / (m.sum() * d.shape[-1]))))


class Editor:
    """One candidate edit as a function of its strength: ``images(alpha)`` for a set of samples."""

    def __init__(self, name, images_fn):
        self.name, self.images = name, images_fn

    def calibrate(self, mask, base, target, alpha0, iters=4):
        """The alpha whose mean inside-region RMS change is ``target`` (secant on the magnitude)."""
        a = float(alpha0)
        for _ in range(iters):
            c = inside_rms(mask, base, self.images(a))
            if c <= 1e-9:
                a *= 4.0
                continue
            a *= target / c
        return a


def panda_candidates(G, F, Z, ctx, region, alpha0):
    """The part overlapping the region most (IoU of its thresholded, upsampled map with the box),
    with each appearance and sign."""
    mask = box_mask(region)
    ious = []
    for k in range(F.rank_s):
        pm = pipeline.part_masks(F, k, mask.shape)
        ious.append((pm & (mask > 0)).sum() / max((pm | (mask > 0)).sum(), 1))
    k = int(np.argmax(ious))
    out = []
    for j in range(F.rank_c):
        for s in (1.0, -1.0):
            def images(a, j=j, s=s):
                E = pj.edit(Z, F, part=k, appearance=j, alpha=s * a)
                return pipeline.render(G, E, LAYER, ctx)
            out.append((Editor(f"part {k}, appearance {j}, sign {s:+g}", images), alpha0))
    return out, {"part": k, "iou": float(ious[k])}


def latent_candidates(G, lat, edit, alpha0):
    out = []
    for i in range(edit.k):
        for s in (1.0, -1.0):
            def images(a, i=i, s=s):
                return np.asarray(baselines.edited_images(G, lat, edit, i, s * a))
            out.append((Editor(f"{edit.method} {i}, sign {s:+g}", images), alpha0))
    return out


def best(candidates, mask, base, target, iters=4):
    """The candidate with the lowest ROIR at the target strength (``iters`` secant steps on the
    selection samples; the evaluation calibrates the pick again), and its alpha and ROIR."""
    scored = []
    for ed, a0 in candidates:
        a = ed.calibrate(mask, base, target, a0, iters)
        scored.append((float(pj.roir(mask, base, ed.images(a))), a, ed))
    scored.sort(key=lambda t: t[0])
    return scored[0]


def jacobian_timing(G, repeat=3, reverse=True):
    """One image's Jacobian with respect to z: JAX forward mode vs torch.autograd.functional.jacobian."""
    import torch

    from convert import readers

    from .common import time_jax, time_torch
    from .torch_reference import dcgan_generator

    fn, args = G.image_fn()
    z = G.sample_latents(jax.random.key(0), 1)
    jac = jax.jit(jax.jacfwd(lambda a, v: fn(a, v[None])[0], argnums=1))
    t_jax = time_jax(lambda: jac(args, z[0]), repeat=repeat)
    tg = dcgan_generator(readers.read(pipeline.default_checkpoint()))
    zt = torch.from_numpy(np.array(z)).reshape(1, -1, 1, 1)
    out = {"jax_forward_s": t_jax}
    engines = [("torch_forward_s", {"vectorize": True, "strategy": "forward-mode"}, repeat, 1)]
    if reverse:  # one backward pass per output value: about a minute here, timed once
        engines.append(("torch_reverse_vectorized_s", {"vectorize": True}, 1, 0))
    for name, kw, rep, warm in engines:
        try:
            out[name] = time_torch(lambda kw=kw: torch.autograd.functional.jacobian(tg, zt, **kw), repeat=rep,
                                   warmup=warm)
        except Exception as e:  # a strategy this torch build does not offer
            out[name] = None
            out[name.replace("_s", "_error")] = f"{type(e).__name__}: {e}"[:200]
    torch_best = min(v for k, v in out.items() if k.startswith("torch") and k.endswith("_s") and v)
    out["speedup_vs_best_torch"] = torch_best / t_jax
    # the two Jacobians agree
    jt = torch.autograd.functional.jacobian(tg, zt, vectorize=True, strategy="forward-mode").detach().reshape(3, 64, 64, -1).permute(1, 2, 0, 3).numpy()
    out["max_abs_diff"] = float(np.abs(np.asarray(jac(args, z[0])) - jt).max())
    return out


def run(plan_name: str, out_dir: str, log=print) -> dict:
    plan = PLANS[plan_name]
    key = jax.random.key(0)
    G = pipeline.load_model("default")
    H, W, C = G.layers[LAYER]
    lat_sel = G.sample_latents(jax.random.key(1), plan["select"])
    lat_eval = G.sample_latents(jax.random.key(2), plan["evaluate"])
    base_sel = np.asarray(G.generate(lat_sel))
    base_eval = np.asarray(G.generate(lat_eval))
    Zs, cs = pipeline.features(G, lat_sel, LAYER)
    Ze, ce = pipeline.features(G, lat_eval, LAYER)

    log("discovery: PandA fit")
    t = time.perf_counter()
    res, Zf, _ = pipeline.fit_on_generator(G, LAYER, RANKS, plan["fit_samples"], plan["fit_steps"], 0, "auto", 64)
    F = res.factors
    discovery = {"PandA": time.perf_counter() - t}
    alpha_panda = pipeline.auto_alpha(F, Zf)
    log("discovery: SeFa, GANSpace")
    sefa = baselines.sefa(G, plan["k"])
    gans = baselines.ganspace(G, plan["k"], plan["ganspace_samples"], key=key)
    discovery["SeFa"], discovery["GANSpace"] = sefa.seconds, gans.seconds
    z_scale = float(np.mean(np.linalg.norm(np.asarray(lat_sel), axis=1)))  # |z|: the latent edit scale

    results = {m: {} for m in METHODS}
    chosen = {m: {} for m in METHODS}
    resefa_s = []
    for region in REGIONS:
        mask = box_mask(region)
        log(f"region {region}: selection")
        picks = {}
        cands, info = panda_candidates(G, F, Zs, cs, region, alpha_panda)
        picks["PandA"] = best(cands, mask, base_sel, plan["target"], plan["select_iters"]) + (info,)
        for m, edit in (("GANSpace", gans), ("SeFa", sefa)):
            picks[m] = best(latent_candidates(G, lat_sel, edit, 0.2 * z_scale), mask, base_sel, plan["target"],
                            plan["select_iters"]) + ({},)
        rs = baselines.resefa(G, lat_sel[:plan["resefa_samples"]], mask, k=1)
        resefa_s.append(rs.seconds)
        picks["ReSeFa"] = best(latent_candidates(G, lat_sel, rs, 0.2 * z_scale), mask, base_sel, plan["target"],
                               plan["select_iters"]) + ({},)
        log(f"region {region}: evaluation on {plan['evaluate']} samples")
        for m, (roir_sel, a_sel, ed, info) in picks.items():
            if m == "PandA":
                k_, j_, s_ = _parse_panda(ed.name)
                def images(a, k_=k_, j_=j_, s_=s_):
                    return pipeline.render(G, pj.edit(Ze, F, part=k_, appearance=j_, alpha=s_ * a), LAYER, ce)
                ev = Editor(ed.name, images)
            else:
                edit = {"GANSpace": gans, "SeFa": sefa, "ReSeFa": rs}[m]
                i_, s_ = _parse_latent(ed.name)
                ev = Editor(ed.name, lambda a, edit=edit, i_=i_, s_=s_: np.asarray(
                    baselines.edited_images(G, lat_eval, edit, i_, s_ * a)))
            a = ev.calibrate(mask, base_eval, plan["target"], a_sel)
            edited = ev.images(a)
            per = np.asarray(pj.roir(mask, base_eval, edited, per_sample=True))
            swd = pj.swd(base_eval, edited, jax.random.key(3), per_image=plan["swd_per_image"])
            results[m][region] = {
                "roir": float(per.mean()), "roir_sem": float(per.std(ddof=1) / np.sqrt(len(per))),
                "swd": swd["mean"], "inside_rms": inside_rms(mask, base_eval, edited), "alpha": a,
                "direction": ed.name, "roir_selection": roir_sel,
                "seconds": discovery.get(m, rs.seconds), **info,
            }
            chosen[m][region] = (ev, a)
    discovery["ReSeFa"] = float(np.mean(resefa_s))
    for region in REGIONS:
        results["ReSeFa"][region]["seconds"] = results["ReSeFa"][region]["seconds"]

    os.makedirs(out_dir, exist_ok=True)
    figure = os.path.join(out_dir, "locality.png")
    _figure(figure, base_eval, chosen, plan["show"])
    out = {
        "methods": results,
        "plan": dict(plan, name=plan_name, layer=LAYER, ranks=list(RANKS)),
        "regions": REGIONS,
        "discovery_seconds": discovery,
        "paper_table2_roir": PAPER,
        "figure": os.path.basename(figure),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_average": list(os.getloadavg()),
    }
    try:
        out["jacobian"] = jacobian_timing(G, repeat=plan["jacobian_repeat"], reverse=plan_name == "full")
    except ImportError as e:
        out["jacobian"] = {"error": f"torch is needed for the comparison: {e}"}
    from .common import machine

    out["machine"] = machine()
    pipeline.write_json(os.path.join(out_dir, "locality.json"), out)
    with open(os.path.join(out_dir, "locality.md"), "w") as f:
        f.write(markdown(out))
    return out


def _parse_panda(name):
    p = name.replace(",", "").split()
    return int(p[1]), int(p[3]), float(p[5])


def _parse_latent(name):
    p = name.replace(",", "").split()
    return int(p[1]), float(p[3])


def _figure(path, base, chosen, show):
    cells, rows = [], []
    for region in REGIONS:
        r0, r1, c0, c1 = REGIONS[region]
        orig = []
        for i in range(show):
            img = figures.to_uint8(base[i]).copy()
            img[r0, c0:c1] = img[r1 - 1, c0:c1] = (255, 40, 40)
            img[r0:r1, c0] = img[r0:r1, c1 - 1] = (255, 40, 40)
            orig.append(img)
        cells.append(orig)
        rows.append(f"{region}: original")
        for m in METHODS:
            ev, a = chosen[m][region]
            imgs = ev.images(a)[:show]
            cells.append([figures.to_uint8(x) for x in imgs])
            rows.append(f"{region}: {m}")
    figures.save_labelled_grid(path, cells, rows, [f"sample {i}" for i in range(show)],
                               title="the same samples edited in each region at equal change inside it")


def markdown(out) -> str:
    res = out["methods"]
    head = "| method | " + " | ".join(f"{r} ROIR | {r} SWD" for r in REGIONS) + " | discovery (s) | paper Table 2 ROIR |"
    lines = [head, "|" + "---|" * (2 + 2 * len(REGIONS) + 1)]
    for m in METHODS:
        cells = []
        for r in REGIONS:
            v = res[m][r]
            cells += [f"{v['roir']:.2f} ± {v['roir_sem']:.2f}", f"{v['swd']:.1f}"]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {out['discovery_seconds'][m]:.1f} | {PAPER[m]} |")
    p = out["plan"]
    note = (f"\nFaces DCGAN 64x64 (the embedded default), PandA at layer {p['layer']} with ranks {tuple(p['ranks'])}; "
            f"{p['select']} selection and {p['evaluate']} evaluation samples; every edit scaled to a per-pixel "
            f"RMS change of {p['target']} inside its region. ROIR: paper Eq. 7, change outside over change inside "
            "(Frobenius), mean ± standard error over samples, lower is more local. SWD: Laplacian-pyramid sliced "
            "Wasserstein distance (x1e3) between the edited and the original images, lower is closer.\n")
    j = out.get("jacobian", {})
    if "jax_forward_s" in j:
        note += (f"\nReSeFa Jacobian of one 64x64 image w.r.t. z (100): JAX forward mode {j['jax_forward_s'] * 1e3:.1f} ms; "
                 + ", ".join(f"{k[:-2].replace('_', ' ')} {v * 1e3:.1f} ms" for k, v in j.items()
                             if k.startswith("torch") and k.endswith("_s") and v)
                 + f"; {j['speedup_vs_best_torch']:.1f}x the best torch; max abs difference {j['max_abs_diff']:.2g}"
                 + (f" (load average {j['load_average'][0]:.1f} when timed)" if j.get("load_average") else "")
                 + ".\n")
    return "\n".join(lines) + "\n" + note


SECTION = "## Locality: PandA, GANSpace, SeFa and ReSeFa on the faces DCGAN (`python -m benchmarks.locality`)"


def results_section(out, figure: str | None = None) -> str:
    """The RESULTS.md section: the machine, the table and the figure."""
    m = out.get("machine", {})
    head = (f"Measured with `python -m benchmarks.locality` ({out['plan'].get('name', 'full')} mode) on "
            f"{out.get('date', 'an unrecorded date')}, {m.get('cpu', 'this machine')}, {m.get('cpu_count', '?')} cores, JAX {m.get('jax', '?')}. "
            "The paper's Table 2 design (section 4.2.1) on the embedded faces GAN: each method's best "
            "direction per region, chosen on selection samples and measured on separate evaluation samples.")
    fig = f"\n![locality]({figure})\n" if figure else ""
    return "\n".join([SECTION, "", head, "", markdown(out).rstrip(), fig])


def write_results(out, out_dir: str) -> None:
    from .common import replace_section

    here = os.path.dirname(os.path.abspath(__file__))
    fig = None
    src = os.path.join(out_dir, "locality.png")
    if os.path.exists(src):
        os.makedirs(os.path.join(here, "results"), exist_ok=True)
        from PIL import Image  # matplotlib's dependency

        # A smaller copy for the repository: 3/4 size, 256 colours (about 0.3 MB instead of 1.2).
        im = Image.open(src).convert("RGB")
        im = im.resize((im.width * 3 // 4, im.height * 3 // 4), Image.LANCZOS).quantize(256)
        im.save(os.path.join(here, "results", "locality.png"), optimize=True)
        fig = "results/locality.png"
    replace_section(SECTION, results_section(out, fig))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.locality", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few samples (under 2 minutes): checks the pipeline")
    ap.add_argument("--out", default=os.path.join("out", "locality"), help="output folder")
    ap.add_argument("--write-results", action="store_true",
                    help="replace the locality section of benchmarks/RESULTS.md")
    ap.add_argument("--jacobian-only", default=None, metavar="DIR",
                    help="re-time only the Jacobian comparison (e.g. on an idle machine) into DIR/locality.json")
    ap.add_argument("--from-json", default=None, metavar="DIR",
                    help="no measuring: write the report of an earlier run's DIR/locality.json")
    a = ap.parse_args(argv)
    if a.jacobian_only:
        import json

        path = os.path.join(a.jacobian_only, "locality.json")
        with open(path) as f:
            out = json.load(f)
        out["jacobian"] = jacobian_timing(pipeline.load_model("default"), reverse=True)
        out["jacobian"]["load_average"] = list(os.getloadavg())
        pipeline.write_json(path, out)
        with open(os.path.join(a.jacobian_only, "locality.md"), "w") as f:
            f.write(markdown(out))
        a.from_json = a.jacobian_only
    if a.from_json:
        import json

        with open(os.path.join(a.from_json, "locality.json")) as f:
            out = json.load(f)
        out.setdefault("date", time.strftime("%Y-%m-%d %H:%M", time.localtime(
            os.path.getmtime(os.path.join(a.from_json, "locality.json")))))
        print(markdown(out))
        if a.write_results:
            write_results(out, a.from_json)
        return 0
    t = time.perf_counter()
    out = run("quick" if a.quick else "full", a.out, log=lambda s: print(s, file=sys.stderr, flush=True))
    print(markdown(out))
    if a.write_results:
        write_results(out, a.out)
    print(f"wrote {a.out}/locality.json, locality.md, locality.png in {time.perf_counter() - t:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
