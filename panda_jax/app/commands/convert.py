"""``panda-jax convert SRC OUT``: a checkpoint into a model directory, with a sample grid."""

from __future__ import annotations

import os
import time

from panda_jax.errors import CheckpointError

from .. import args as A
from .. import pipeline


def add_parser(sub):
    p = sub.add_parser("convert", formatter_class=A.HelpFormatter, help="convert a PyTorch checkpoint into a model directory",
                       description="Convert a generator checkpoint into a model directory (config.json + "
                                   "parameters) and render a fixed-seed sample grid OUT/samples.png as a check.")
    p.add_argument("src", metavar="SRC", help="checkpoint file (.pth/.pt/.tar/.pkl), HuggingFace folder, or "
                                              "'default' (the embedded faces DCGAN)")
    p.add_argument("out", metavar="OUT", help="model directory to write: new or empty (an earlier conversion "
                                              "only with --force)")
    p.add_argument("--force", action="store_true", help="replace OUT if it holds an earlier conversion")
    p.add_argument("--arch", metavar="NAME", default=None,
                   help="architecture (family or zoo name, e.g. dcgan) when it cannot be inferred")
    p.add_argument("--seed", type=A.seed, default=0, help="seed of the sample grid")
    p.add_argument("--no-samples", action="store_true", help="skip the sample grid")
    A.add_common(p)
    p.set_defaults(func=run)


def convert_into(src: str, out: str, arch: str | None, samples: bool, seed: int = 0, force: bool = False):
    """Convert ``src`` into ``out`` (atomic) and write ``out/samples.png``; the generator."""
    import convert
    import ported_gens

    from .. import figures

    convert.convert(src, out, arch, force=force)
    G = ported_gens.load(out)
    if samples:
        grid, scale = pipeline.sample_grid(G, seed)
        figures.save_image(os.path.join(out, "samples.png"), grid, scale=scale)
    return G


def run(args):
    src = pipeline.source_path(args.src)
    if not os.path.exists(src):
        raise CheckpointError(f"checkpoint {args.src!r} does not exist; give the path of a checkpoint file or folder")
    t0 = time.perf_counter()
    G = convert_into(src, args.out, args.arch, samples=not args.no_samples, seed=args.seed, force=args.force)
    layers = ", ".join(f"{l}: {h}x{w}x{c}" for l, (h, w, c) in sorted(G.layers.items()))
    pipeline.say(args, f"converted {os.path.basename(src)} -> {args.out} ({G.family} {G.config}) in "
                       f"{time.perf_counter() - t0:.1f} s")
    pipeline.say(args, f"layers {{{layers}}}")
    if not args.no_samples:
        pipeline.say(args, f"check the samples: {os.path.join(args.out, 'samples.png')}")
    return 0
