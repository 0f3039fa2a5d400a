"""What every command shares: loading models, batched features and rendering, staged outputs.

Models load through :func:`ported_gens.load` (a converted directory or a converted zoo name),
from a checkpoint file (converted in memory), or ``default`` (the embedded faces DCGAN).
Features and images are computed in fixed-size batches so a few compiled programs serve every
call. Outputs go through :class:`Staging`: written into a staging sibling and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import numpy as np

from panda_jax._io import atomic_write, default_permissions, real_target, replace_dir, staging_dir
from panda_jax.errors import CheckpointError, ConfigError, FactorsError, RankError

DEFAULT_MODEL = "default"
DEFAULT_ALIASES = (DEFAULT_MODEL, "dcgan_faces64")
EDIT_SCALE = 2.5  # automatic |alpha|: this many times the mean feature norm per position
RENDER_BATCH = 32
MAX_SAMPLES = 1 << 20  # more samples than this are refused before any work (memory)


# ---- output ---------------------------------------------------------------------------------


class Staging:
    """Files for ``out_dir`` are written into a staging sibling, then renamed into place on
    success (existing entries of the same name are replaced, others are left alone); on failure
    the staging folder is removed. A symbolic link as ``out_dir`` is written through."""

    def __init__(self, out_dir: str):
        self.out = real_target(out_dir)
        if os.path.exists(self.out) and not os.path.isdir(self.out):
            raise ConfigError(f"output {out_dir!r} exists and is not a directory; give a directory path")
        self.tmp = staging_dir(self.out)

    def path(self, *names: str) -> str:
        return os.path.join(self.tmp, *names)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            default_permissions(self.tmp)
            os.makedirs(self.out, exist_ok=True)
            for name in sorted(os.listdir(self.tmp)):
                src, dst = os.path.join(self.tmp, name), os.path.join(self.out, name)
                if os.path.isdir(dst) and not os.path.islink(dst):
                    replace_dir(src, dst)
                else:
                    os.replace(src, dst)
        shutil.rmtree(self.tmp, ignore_errors=True)
        return False


def check_out_dir(out: str, what: str = "--out") -> str:
    """Refuse an output directory that cannot be written (checked before any work)."""
    target = real_target(out)
    if os.path.exists(target) and not os.path.isdir(target):
        raise ConfigError(f"{what} {out!r} exists and is not a directory; give a directory path")
    parent = target
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {out!r} cannot be written ({parent!r} is not a writable directory)")
    return target


def check_out_file(path: str, what: str, suffix: str | None = None) -> str:
    """Refuse an output file path whose folder does not exist or cannot be written."""
    if suffix and not path.endswith(suffix):
        path += suffix
    if os.path.isdir(path):
        raise ConfigError(f"{what} {path!r} is a directory; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ConfigError(f"{what} {path!r}: the folder {folder!r} does not exist; create it first")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {path!r}: the folder {folder!r} is not writable")
    return path


def write_json(path: str, obj) -> str:
    """JSON, atomically; NaN/inf are written as null (strict JSON)."""

    def clean(v):
        if isinstance(v, float) and not np.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(clean(obj), f, indent=2, sort_keys=True, allow_nan=False)
            f.write("\n")

    return atomic_write(path, write)


def save_npz(path: str, **arrays) -> str:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    return atomic_write(path, write)


def say(args, msg: str):
    if not getattr(args, "quiet", False):
        print(msg, flush=True)


def show_progress(args) -> bool:
    """Progress for long stages: a bar on a terminal, log lines otherwise; none with -q."""
    return not getattr(args, "quiet", False)


def bar(iterable=None, total=None, desc="", enabled=True):
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, disable=not (enabled and sys.stderr.isatty()))


# ---- models ---------------------------------------------------------------------------------


def default_checkpoint() -> str:
    from ported_gens.dcgan import default_checkpoint as find

    return find()


def cache_dir() -> str:
    """Where panda-jax keeps what it can reuse (converted default model, compiled programs, the
    editor's factors): ``$PANDA_JAX_CACHE`` or ``~/.cache/panda-jax``."""
    return os.environ.get("PANDA_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "panda-jax")


def default_model():
    """The embedded faces DCGAN, converted from its checkpoint on every call: the zip-format
    file is read without torch (:mod:`convert.torchfree`), so this takes about 0.2 s, less than
    loading a saved conversion would."""
    import convert

    return convert.to_generator(default_checkpoint())


def source_path(src: str) -> str:
    """``default`` -> the embedded faces DCGAN checkpoint; other values unchanged."""
    return default_checkpoint() if src in DEFAULT_ALIASES and not os.path.exists(src) else src


def load_model(spec: str | None):
    """A generator from a converted directory, a converted zoo name, a checkpoint file, or
    ``default`` (the embedded faces DCGAN, converted in memory)."""
    import convert
    import ported_gens
    from ported_gens import zoo

    if spec is None:
        raise ConfigError("no model given and the factors do not name one; give MODEL (a directory from panda-jax convert)")
    if spec in DEFAULT_ALIASES and not os.path.exists(spec):
        return default_model()
    if os.path.isdir(spec) or (spec in zoo.ZOO and not os.path.exists(spec)):
        return ported_gens.load(spec)
    if os.path.isfile(spec):
        return convert.to_generator(spec)
    raise CheckpointError(
        f"model {spec!r} does not exist; give a directory written by `panda-jax convert`, a converted zoo "
        f"name, a checkpoint file, or '{DEFAULT_MODEL}' for the embedded faces DCGAN"
    )


def model_name(spec: str) -> str:
    """How factors record the model they were fitted on."""
    if spec in DEFAULT_ALIASES and not os.path.exists(spec):
        return DEFAULT_MODEL
    from ported_gens import zoo

    if spec in zoo.ZOO and not os.path.exists(spec):
        return spec
    return os.path.abspath(spec)


def check_ranks(G, layer: int, ranks) -> tuple[int, int]:
    H, W, C = G.layers[layer]
    rc, rs = ranks
    if not (1 <= rc <= C and 1 <= rs <= H * W):
        raise RankError(
            f"ranks ({rc}, {rs}) do not fit layer {layer} ({H}x{W}x{C} features): R_C must be in 1..{C} "
            f"and R_S in 1..{H * W}; choose smaller ranks or another --layer"
        )
    return int(rc), int(rs)


def check_samples(G, layer: int, n: int, what: str = "--samples") -> int:
    """Refuse sample counts whose features would not fit in memory, before any work."""
    H, W, C = G.layers[layer]
    if n > MAX_SAMPLES or n * H * W * C * 4 > 64 << 30:
        raise ConfigError(
            f"{what} {n} would need {n * H * W * C * 4 / 2**30:.0f} GiB of features at layer {layer}; "
            "use fewer samples, or fit --stochastic (fresh batches every step, memory independent of the count)"
        )
    return n


# ---- latents, features, images --------------------------------------------------------------


def slice_tree(tree, i: int, j: int):
    import jax

    return jax.tree_util.tree_map(lambda a: a[i:j], tree)


def concat(trees):
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda *a: jnp.concatenate(a, axis=0), *trees)


def latents_for_seeds(G, seeds):
    """One latent per seed (``sample_latents(key(seed), 1)``), stacked."""
    import jax

    return concat([G.sample_latents(jax.random.key(int(s)), 1) for s in seeds])


def features(G, lat, layer: int, truncation: float = 1.0, batch: int = 64, progress: bool = False,
             desc: str = "features"):
    """``(Z, ctx)`` for all latents, computed ``batch`` at a time."""
    import jax

    n = jax.tree_util.tree_leaves(lat)[0].shape[0]
    outs = []
    for i in bar(range(0, n, batch), desc=desc, enabled=progress):
        outs.append(G.features(slice_tree(lat, i, i + batch), layer, truncation))
    return concat([o[0] for o in outs]), concat([o[1] for o in outs])


def render(G, Z, layer: int, ctx, batch: int = RENDER_BATCH, progress: bool = False, desc: str = "render"):
    """Images ``[N, H, W, 3]`` as numpy, rendered in batches padded to ``batch`` (or, for fewer
    images, to a power of two) so few compilations serve every call."""
    import jax
    import jax.numpy as jnp

    n = Z.shape[0]
    out = []
    for i in bar(range(0, n, batch), desc=desc, enabled=progress):
        z, c = Z[i:i + batch], slice_tree(ctx, i, i + batch)
        k = z.shape[0]
        size = batch if n > batch else 1 << (k - 1).bit_length()  # few distinct shapes: few compilations
        if k < size:
            pad = lambda a: jnp.concatenate([a, jnp.repeat(a[-1:], size - k, axis=0)])  # noqa: E731
            z, c = pad(z), jax.tree_util.tree_map(pad, c)
        out.append(np.asarray(G.render(z, layer, c))[:k])
    return np.concatenate(out)


def tile_ctx(ctx, k: int):
    import jax
    import jax.numpy as jnp

    return jax.tree_util.tree_map(lambda a: jnp.concatenate([a] * k, axis=0), ctx)


def _feature_scale(Z):
    import jax.numpy as jnp

    return jnp.mean(jnp.linalg.norm(Z, axis=-1))


def feature_scale(Z) -> float:
    """Mean Euclidean norm of the feature vector at a position (the scale of edits)."""
    import jax

    return float(jax.jit(_feature_scale)(Z))  # one program (the eager form loads two)


def auto_alpha(F, Z) -> float:
    """``EDIT_SCALE`` times the feature scale recorded with the factors (else measured on ``Z``)."""
    scale = F.meta.get("feature_scale")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not np.isfinite(scale) or scale <= 0:
        scale = feature_scale(Z)
    return round(EDIT_SCALE * float(scale), 3)


def sample_grid(G, seed: int = 0):
    """A fixed-seed grid of samples (uint8) and the display scale."""
    import jax

    from . import figures

    H = max(h for h, _, _ in G.layers.values())
    n = 16 if H <= 256 else 4
    imgs = []
    lat = G.sample_latents(jax.random.key(seed), n)
    step = 4 if H > 256 else n
    for i in range(0, n, step):
        imgs.append(np.asarray(G.generate(slice_tree(lat, i, i + step))))
    imgs = figures.to_uint8(np.concatenate(imgs))
    grid = figures.tile(list(imgs), cols=4 if n >= 4 else n)
    return grid, 2 if imgs.shape[1] <= 128 else 1


def _split_seed(seed):
    import jax

    return tuple(jax.random.split(jax.random.key(seed)))


def seed_keys(seed: int):
    """``split(key(seed))`` as ``(k_latents, k_fit)``, in one program (eagerly it loads four).
    Seeds are int32 (``args.seed``): the traced seed gives the keys the Python int gives."""
    import jax

    return jax.jit(_split_seed)(np.int32(seed))


def fit_on_generator(G, layer, ranks, samples, steps, seed, lr, batch, method="pgd", truncation=1.0,
                     stochastic=False, progress=False, timings=None, **fit_kwargs):
    """Sample features and fit: ``(FitResult, features, latents)`` (``None, None`` when stochastic).
    ``timings``, a dict, receives ``features_s`` (sampling, waited for) and ``fit_s`` (the fit call)."""
    import time

    import jax

    import panda_jax as pj

    t = time.perf_counter()
    k_lat, k_fit = seed_keys(seed)
    if stochastic:
        sample_fn, args = G.sample_fn(layer, truncation)
        res = pj.fit_stream(sample_fn, ranks, steps=steps, batch_size=batch, lr=lr, key=k_fit,
                            sample_args=args, progress=progress, **fit_kwargs)
        if timings is not None:
            timings.update(features_s=0.0, fit_s=time.perf_counter() - t)
        return res, None, None
    lat = G.sample_latents(k_lat, samples)
    Z, _ = features(G, lat, layer, truncation, batch, progress)
    if timings is not None:
        Z = jax.block_until_ready(Z)  # the fit would wait for it anyway: only the attribution changes
        timings["features_s"] = time.perf_counter() - t
        t = time.perf_counter()
    res = pj.fit(Z, ranks=ranks, steps=steps, lr=lr, method=method, key=k_fit, progress=progress, **fit_kwargs)
    if timings is not None:
        timings["fit_s"] = time.perf_counter() - t
    return res, Z, lat


def load_factors_for(args):
    """The factors of ``args.factors``, the generator they belong to (``args.model`` or the one
    recorded in the factors) and the layer (``args.layer`` or the recorded one)."""
    import panda_jax as pj

    F = pj.load_factors(args.factors)
    meta = F.meta
    layer = args.layer if getattr(args, "layer", None) is not None else meta.get("layer")
    if layer is None:
        raise FactorsError(f"{args.factors!r} does not record its layer; give --layer")
    model = args.model if args.model is not None else meta.get("model")
    if model is not None and not isinstance(model, str):
        raise FactorsError(f"{args.factors!r} records the model as {model!r}, not a name; give MODEL")
    G = load_model(model)
    layer = G.check_layer(layer)
    H, W, C = G.layers[layer]
    if (F.height, F.width, F.channels) != (H, W, C):
        raise FactorsError(
            f"the factors are for {F.height}x{F.width}x{F.channels} features but layer {layer} of this "
            f"{G.family} generator is {H}x{W}x{C}; give the model and --layer they were fitted on"
        )
    return F, G, int(layer)


def part_masks(F, parts, size):
    """Binary masks at image resolution from the (summed, min-max normalised) part map(s)."""
    import panda_jax as pj

    from . import figures

    m = np.asarray(pj.part_map(F, parts))
    return figures.resize_map(m, size) >= 0.5
