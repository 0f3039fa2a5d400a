"""Factors fitted by ``panda-jax serve`` at first start, kept for the next start.

They live in the command's cache folder (``$PANDA_JAX_CACHE``, default ``~/.cache/panda-jax``,
beside the converted default model and the compiled programs that make a later start quick); a
file's name is the hash of what determines the fit: the model's weights (the checkpoint's
sha256, or a converted model's recorded source hash and config), the layer, the ranks, the
number of samples and steps, and the seed. Files are written atomically, so an interrupted fit
leaves nothing.
"""

from __future__ import annotations

import hashlib
import json
import os

from .. import pipeline


def cache_dir() -> str:
    return os.path.abspath(pipeline.cache_dir())


def model_fingerprint(spec: str, G) -> str:
    """A hash of the model's weights' identity: the checkpoint file's sha256, or (a converted
    directory or zoo name) the source hash and config it records."""
    from convert import readers

    src = pipeline.source_path(spec)
    if os.path.isfile(src):
        return readers.sha256(src)
    ident = {"family": G.family, "config": G.config, "source": G.source}
    if not G.source:
        ident["model"] = os.path.abspath(spec) if os.path.exists(spec) else spec
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def factors_key(fingerprint: str, layer: int, ranks, samples: int, steps: int, seed: int) -> str:
    ident = {"model": fingerprint, "layer": int(layer), "ranks": [int(r) for r in ranks], "samples": int(samples),
             "steps": int(steps), "seed": int(seed), "lr": "auto", "method": "pgd", "truncation": 1.0}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def cached_factors(spec: str, G, layer: int, ranks, samples: int, steps: int, seed: int, say=print,
                   progress: bool = True):
    """``(factors, path, fitted)``: the cached factors for these settings, fitted (with a
    progress display) and saved on a miss."""
    import panda_jax as pj

    d = cache_dir()
    path = os.path.join(d, f"factors-{factors_key(model_fingerprint(spec, G), layer, ranks, samples, steps, seed)}.npz")
    if os.path.isfile(path):
        try:
            F = pj.load_factors(path)
            H, W, C = G.layers[layer]
            if (F.height, F.width, F.channels) == (H, W, C) and F.ranks == tuple(ranks):
                return F, path, False
        except pj.PandaError:
            pass  # unreadable: fit again and replace it
        say(f"the cached factors {path} do not match; fitting again")
    os.makedirs(d, exist_ok=True)
    H, W, C = G.layers[layer]
    say(f"fitting parts and appearances at layer {layer} ({H}x{W}x{C}), ranks {tuple(ranks)}, {samples} samples, "
        f"{steps} steps (first start; cached in {d} for the next)")
    res, Z, _ = pipeline.fit_on_generator(G, layer, tuple(ranks), samples, steps, seed, "auto", 64, progress=progress)
    F = res.factors.with_meta(model=pipeline.model_name(spec), family=G.family, layer=layer, samples=samples,
                              steps=res.n_steps, seed=seed, lr="auto", method="pgd", truncation=1.0,
                              stochastic=False, feature_scale=pipeline.feature_scale(Z))
    pj.save_factors(path, F)
    say(f"fitted in {res.seconds:.1f} s; saved {path}")
    return F, path, True
