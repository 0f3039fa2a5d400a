"""``panda-jax fit MODEL --layer L --ranks RC RS --out F.npz``: sample features and fit."""

from __future__ import annotations

import os
import shutil

from panda_jax.errors import ConfigError

from .. import args as A
from .. import pipeline

DEFAULT_SAMPLES, DEFAULT_STEPS = 128, 200


def add_parser(sub):
    p = sub.add_parser("fit", formatter_class=A.HelpFormatter, help="fit parts and appearances at a layer",
                       description="Sample features at a layer and fit R_C appearances and R_S non-negative "
                                   "parts (PandA, Algorithm 1); write the factors (with the model and layer "
                                   "in their metadata).")
    p.add_argument("model", metavar="MODEL", help="converted model directory or zoo name, checkpoint file or 'default'")
    p.add_argument("--layer", type=int, required=True, metavar="L", help="layer index (see `panda-jax convert` output)")
    p.add_argument("--ranks", type=A.positive_int, nargs=2, metavar=("RC", "RS"), required=True,
                   help="numbers of appearances and parts")
    p.add_argument("--samples", type=A.positive_int, default=DEFAULT_SAMPLES, metavar="N",
                   help="number of sampled feature maps")
    p.add_argument("--steps", type=A.positive_int, default=DEFAULT_STEPS, metavar="T", help="optimisation steps")
    p.add_argument("--seed", type=A.seed, default=0, metavar="S", help="random seed (latents and parts init)")
    p.add_argument("--lr", type=A.lr, default="auto", help="'auto' (backtracking) or the step size on the summed loss")
    p.add_argument("--batch", type=A.positive_int, default=64, metavar="B",
                   help="generator batch when sampling; with --stochastic the fresh batch per step")
    p.add_argument("--method", choices=("pgd", "adam"), default="pgd", help="projected gradient steps or Adam")
    p.add_argument("--truncation", type=A.truncation, default=1.0, metavar="PSI", help="truncation of the latents")
    p.add_argument("--stochastic", action="store_true",
                   help="draw a fresh batch of --batch samples every step instead of a fixed set of --samples")
    p.add_argument("--tol", type=A.real, default=0.0, help="stop once the loss decreases by less than this "
                                                          "fraction over a chunk of steps (0: run every step)")
    p.add_argument("--checkpoint-every", type=A.positive_int, default=None, metavar="K",
                   help="save the fit state every K steps beside --out (FILE.fit-state/), and on Ctrl-C")
    p.add_argument("--resume", action="store_true", help="continue the fit saved beside --out")
    p.add_argument("--loss-plot", metavar="PNG", default=None, help="also write the loss curve here")
    p.add_argument("--out", required=True, metavar="FILE", help="factors file to write (.npz)")
    p.add_argument("--timings", action="store_true",
                   help="print where the time went (model, features, fit, write), also with -q")
    A.add_common(p)
    p.set_defaults(func=run)


def state_dir(out: str) -> str:
    """Where ``fit --checkpoint-every`` keeps the fit state for ``--out``."""
    return os.path.splitext(out)[0] + ".fit-state"


def format_timings(t: dict) -> str:
    """``timings: model 0.21 s, features 0.55 s, fit 3.9 s (300 steps 3 s), write 0.01 s``."""
    return (f"timings: model {t['model_s']:.3g} s, features {t['features_s']:.3g} s, fit {t['fit_s']:.3g} s "
            f"({t['steps']} steps {t['steps_s']:.3g} s), write {t['write_s']:.3g} s")


def parse_timings(text: str) -> dict | None:
    """The numbers of the last :func:`format_timings` line in ``text`` (None without one)."""
    import re

    num = r"([0-9.]+(?:e[+-]?[0-9]+)?)"
    found = re.findall(rf"timings: model {num} s, features {num} s, fit {num} s \(([0-9]+) steps {num} s\), "
                       rf"write {num} s", text)
    if not found:
        return None
    m, f, fit, n, st, w = found[-1]
    return {"model_s": float(m), "features_s": float(f), "fit_s": float(fit), "steps": int(n), "steps_s": float(st),
            "write_s": float(w)}


def run(args):
    import time

    import panda_jax as pj

    t0 = time.perf_counter()
    timings = {} if args.timings else None
    out = pipeline.check_out_file(args.out, "--out", ".npz")
    if args.loss_plot:
        pipeline.check_out_file(args.loss_plot, "--loss-plot")
    if args.method == "adam" and args.stochastic:
        raise ConfigError("--stochastic fits with projected gradient steps only; drop --method adam")
    G = pipeline.load_model(args.model)
    layer = G.check_layer(args.layer)
    ranks = pipeline.check_ranks(G, layer, args.ranks)
    if not args.stochastic:
        pipeline.check_samples(G, layer, args.samples)
    H, W, C = G.layers[layer]
    t_model = time.perf_counter() - t0
    ckpt = state_dir(out) if (args.checkpoint_every or args.resume) else None
    res, Z, _ = pipeline.fit_on_generator(
        G, layer, ranks, args.samples, args.steps, args.seed, args.lr, args.batch, args.method, args.truncation,
        args.stochastic, pipeline.show_progress(args), tol=args.tol, checkpoint=ckpt,
        checkpoint_every=args.checkpoint_every, resume=args.resume, timings=timings)
    t_write = time.perf_counter()
    meta = {
        "model": pipeline.model_name(args.model), "family": G.family, "layer": layer, "samples": args.samples,
        "steps": res.n_steps, "seed": args.seed, "lr": args.lr, "method": args.method,
        "truncation": args.truncation, "stochastic": args.stochastic,
    }
    if Z is not None:
        meta["feature_scale"] = pipeline.feature_scale(Z)
    F = res.factors.with_meta(**meta)
    pj.save_factors(out, F)
    if args.loss_plot:
        from .. import figures

        figures.save_loss_curve(args.loss_plot, res.losses, title=f"fit at layer {layer}, R=({ranks[0]}, {ranks[1]})")
    if ckpt is not None:
        shutil.rmtree(ckpt, ignore_errors=True)  # the factors are written: the state has done its job
    l0, l1 = (float(res.losses[0]), float(res.losses[-1])) if len(res.losses) else (float("nan"),) * 2
    if timings is not None:
        timings.update(model_s=t_model, steps=res.n_steps, steps_s=res.seconds, write_s=time.perf_counter() - t_write)
        print(format_timings(timings), flush=True)
    pipeline.say(args, f"fitted R_C={ranks[0]}, R_S={ranks[1]} at layer {layer} ({H}x{W}x{C}) in {res.n_steps} "
                       f"steps, {res.seconds:.1f} s; loss {l0:.4g} -> {l1:.4g}; wrote {out}")
    return 0
