"""``panda-jax serve [MODEL] [--factors F.npz]``: the interactive editor in the browser.

Loads the model and the factors (fitted at first start and cached when none are given),
compiles every function the page uses once (warm-up), and serves the page and its JSON
endpoints on 127.0.0.1 (see :mod:`panda_jax.app.editor`).
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time

from panda_jax.errors import ConfigError

from .. import args as A
from .. import pipeline
from .demo import DEMO_LAYER, DEMO_RANKS, DEMO_SAMPLES, DEMO_STEPS

DEFAULT_PORT = 7860


def add_parser(sub):
    p = sub.add_parser("serve", formatter_class=A.HelpFormatter, help="the interactive editor in the browser",
                       description="Serve a local editor: pick samples, see and click parts, choose appearances "
                                   "from a gallery, slide alpha, stack edits, brush regions, refine parts, view "
                                   "saliency and background removal, compare with GANSpace/SeFa/ReSeFa, export "
                                   "PNG, GIF and a recipe for `panda-jax edit --recipe`. Without --factors, "
                                   "factors are fitted at first start (the demo's settings) and cached in "
                                   "$PANDA_JAX_CACHE (default ~/.cache/panda-jax). Works offline.")
    p.add_argument("model", metavar="MODEL", nargs="?", default=None,
                   help="converted model directory or zoo name, checkpoint file or 'default' (default: the "
                        "model the factors name, else the embedded faces DCGAN)")
    p.add_argument("--factors", metavar="F.npz", default=None, help="factors written by `panda-jax fit` "
                                                                   "(default: fit and cache them)")
    p.add_argument("--layer", type=int, default=None, metavar="L",
                   help=f"layer (default: the factors' layer, else {DEMO_LAYER} for the embedded DCGAN)")
    p.add_argument("--ranks", type=A.positive_int, nargs=2, default=list(DEMO_RANKS), metavar=("RC", "RS"),
                   help="numbers of appearances and parts when fitting")
    p.add_argument("--samples", type=A.positive_int, default=DEMO_SAMPLES, metavar="N", help="samples when fitting")
    p.add_argument("--steps", type=A.positive_int, default=DEMO_STEPS, metavar="T", help="fit steps when fitting")
    p.add_argument("--seed", type=A.seed, default=0, help="seed of the fit and of the first sample shown")
    p.add_argument("--refine-steps", type=A.positive_int, default=100, metavar="T",
                   help="steps of the per-sample parts refinement (Eq. 6)")
    p.add_argument("--no-compare", action="store_true",
                   help="skip the comparison with GANSpace, SeFa and ReSeFa (their directions are found at start)")
    p.add_argument("--ganspace-samples", type=A.positive_int, default=4096, metavar="N",
                   help="samples of GANSpace's PCA for the comparison")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; anything but a loopback address makes the editor reachable from "
                        "other machines, without authentication")
    p.add_argument("--port", type=port, default=DEFAULT_PORT, help="port (0: any free port)")
    p.add_argument("--log-requests", action="store_true", help="log every request on stderr")
    A.add_common(p)
    p.set_defaults(func=run)


def port(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {s!r}") from None
    if not 0 <= v <= 65535:
        raise argparse.ArgumentTypeError(f"port {v} is out of range (0..65535; 0 picks a free port)")
    return v


def load(args, say):
    """``(G, factors, layer, model_name, factors_path)``."""
    from ..editor import cache

    if args.factors is not None and not os.path.isfile(args.factors):
        raise ConfigError(f"--factors {args.factors!r} does not exist; give a file written by `panda-jax fit`")
    if args.factors is not None:
        F, G, layer = pipeline.load_factors_for(args)
        model = pipeline.model_name(args.model) if args.model is not None else F.meta.get("model")
        return G, F, layer, model, os.path.abspath(args.factors)
    spec = args.model if args.model is not None else pipeline.DEFAULT_MODEL
    G = pipeline.load_model(spec)
    if args.layer is None and pipeline.model_name(spec) != pipeline.DEFAULT_MODEL:
        raise ConfigError(f"give --layer for {spec!r} (valid: {sorted(G.layers)}), or --factors fitted on it")
    layer = G.check_layer(DEMO_LAYER if args.layer is None else args.layer)
    ranks = pipeline.check_ranks(G, layer, args.ranks)
    pipeline.check_samples(G, layer, args.samples)
    F, path, _ = cache.cached_factors(spec, G, layer, ranks, args.samples, args.steps, args.seed, say=say,
                                      progress=pipeline.show_progress(args))
    return G, F, layer, pipeline.model_name(spec), path


def run(args):
    from .. import recipe
    from ..editor import Engine, compare, make_server, server

    say = (lambda m: None) if args.quiet else (lambda m: print(m, flush=True))
    loopback = server.is_loopback(args.host)
    if not loopback:
        print(f"panda-jax: warning: serving on {args.host}: the editor is reachable from other machines and has no "
              "authentication; use the default 127.0.0.1 unless you mean this", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    G, F, layer, model, fpath = load(args, say)
    H, W, C = G.layers[layer]
    say(f"editor: {G.family} at layer {layer} ({H}x{W}x{C}), ranks {F.ranks}, factors {fpath}")
    info = {"model": model, "factors_file": fpath, "factors_sha256": recipe.file_sha256(fpath)}
    engine = Engine(G, F, layer, refine_steps=args.refine_steps, seed=args.seed, info=info)
    t1 = time.perf_counter()
    engine.warm_up()
    if not args.no_compare:
        compare.prepare(engine, say, ganspace_samples=args.ganspace_samples)
    say(f"compiled the editor's functions in {time.perf_counter() - t1:.1f} s")
    try:
        httpd = make_server(engine, args.host, args.port, quiet=not args.log_requests)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise ConfigError(f"port {args.port} is in use; give another --port (0 picks a free one)") from None
        raise ConfigError(f"cannot serve on {args.host}:{args.port} ({e.strerror or e})") from None
    print(f"panda-jax editor ready in {time.perf_counter() - t0:.1f} s: {httpd.url}  (Ctrl-C to stop)", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        say("stopped")
    finally:
        httpd.server_close()
    return 0
