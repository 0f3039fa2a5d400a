"""The Generator interface every ported family implements, and the converted-directory format.

A family subclasses :class:`Generator` and implements four pure methods, all traced under
``jit`` with ``layer`` and ``truncation`` static:

``_layer_shapes()``
    ``{layer: (H, W, C)}`` for every usable layer index (the original PandA code's indices).
``_features(lat, layer, truncation)``
    ``(Z, ctx)``: ``Z`` the feature map ``[N, H, W, C]`` at ``layer``; ``ctx`` a dict of arrays
    that resuming needs (w+, BigGAN's cond vector, StyleGAN2's skip image, ...).
``_render(Z, layer, ctx)``
    the image ``[N, H, W, 3]`` from resuming at ``layer`` with (possibly edited) ``Z``.
``_generate(lat, truncation)``
    the whole forward; the default is ``_render(*_features(...))`` at the first layer.

``render(*features(lat, l), l)`` equals ``generate(lat)`` for every family and layer.

Images are NHWC float (nominally [-1, 1]); feature maps are NHWC.

A converted model is a directory holding ``config.json`` (family, constructor config, source
file name and sha256) and ``params/``, an orbax checkpoint of the module's state.
"""

from __future__ import annotations

import json
import os
import shutil
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from panda_jax._io import is_within, real_target, replace_dir, staging_dir
from panda_jax.errors import CheckpointError, ConfigError, LayerError

FORMAT_VERSION = 1
FAMILIES: dict[str, type["Generator"]] = {}


class Buffer(nnx.Variable):
    """A stored, non-trainable tensor (noise maps, filters, running statistics, w_avg)."""


class Latents(NamedTuple):
    """Latent codes; ``classes`` is ``None`` for unconditional generators, else ``[N, n_classes]``
    one-hot (or soft) class vectors (BigGAN)."""

    z: jax.Array
    classes: jax.Array | None = None


def as_latents(lat) -> Latents:
    if isinstance(lat, Latents):
        return lat
    if isinstance(lat, tuple) and len(lat) == 2:
        return Latents(*lat)
    return Latents(jnp.asarray(lat))


def register_family(name: str) -> Callable[[type], type]:
    """Class decorator: make a Generator subclass loadable from a converted directory."""

    def deco(cls):
        cls.family = name
        FAMILIES[name] = cls
        return cls

    return deco


@partial(jax.jit, static_argnames=("graphdef", "method", "static"))
def _call(graphdef, state, method, static, traced):
    module = nnx.merge(graphdef, state)
    return getattr(module, method)(**traced, **dict(static))


class Generator(nnx.Module):
    """Base class of the ported generators (see the module docstring)."""

    family: str = "?"

    def __init__(self, config: dict):
        # Plain-JSON constructor config, written to config.json and given back to __init__.
        # Kept as a JSON string: static (part of the graph definition) and hashable.
        self._config_json = json.dumps(dict(config), sort_keys=True)

    @property
    def config(self) -> dict:
        """The constructor keyword arguments (plain JSON values)."""
        return json.loads(self._config_json)

    # ---- to implement -------------------------------------------------------------------
    def _layer_shapes(self) -> dict[int, tuple[int, int, int]]:
        raise NotImplementedError

    @property
    def z_dim(self) -> int:
        raise NotImplementedError

    def _features(self, lat: Latents, layer: int, truncation: float):
        raise NotImplementedError

    def _render(self, Z, layer: int, ctx: dict):
        raise NotImplementedError

    def _generate(self, lat: Latents, truncation: float):
        first = min(self._layer_shapes())
        Z, ctx = self._features(lat, first, truncation)
        return self._render(Z, first, ctx)

    # ---- public API ---------------------------------------------------------------------
    @property
    def layers(self) -> dict[int, tuple[int, int, int]]:
        """``{layer: (H, W, C)}`` for every usable layer index."""
        return dict(self._layer_shapes())

    @property
    def source(self) -> dict:
        """Where the parameters came from (file name, sha256), when loaded from a directory."""
        return json.loads(getattr(self, "_source_json", "{}"))

    def check_layer(self, layer) -> int:
        shapes = self._layer_shapes()
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or int(layer) not in shapes:
            lo, hi = min(shapes), max(shapes)
            raise LayerError(
                f"layer {layer!r} is not a layer of this {self.family} generator; "
                f"use an integer in {lo}..{hi} (valid: {sorted(shapes)})"
            )
        return int(layer)

    def sample_latents(self, key, n: int):
        """Standard-normal z of shape ``[n, z_dim]``."""
        return jax.random.normal(key, (int(n), self.z_dim), jnp.float32)

    def _jit(self, method, static: tuple, **traced):
        """Run ``method`` under one cached ``jit``: ``static`` (name, value) pairs are compile-time
        constants, ``traced`` keyword arrays are traced."""
        graphdef, state = nnx.split(self)
        return _call(graphdef, state, method, static, traced)

    def features(self, lat, layer: int, truncation: float = 1.0):
        """``(Z, ctx)``: the feature map ``[N, H, W, C]`` at ``layer`` and what resuming needs."""
        layer = self.check_layer(layer)
        return self._jit("_features", (("layer", layer), ("truncation", float(truncation))), lat=as_latents(lat))

    def render(self, Z, layer: int, ctx: dict):
        """The image ``[N, H, W, 3]`` from resuming the generator at ``layer`` with ``Z``."""
        layer = self.check_layer(layer)
        return self._jit("_render", (("layer", layer),), Z=jnp.asarray(Z), ctx=ctx)

    def generate(self, lat, truncation: float = 1.0):
        """The image ``[N, H, W, 3]`` of the whole forward."""
        return self._jit("_generate", (("truncation", float(truncation)),), lat=as_latents(lat))


# ---- converted directories --------------------------------------------------------------


MODEL_FORMAT = "panda-jax generator"


def is_converted_model(path: str) -> bool:
    """Is ``path`` provably a directory written by :func:`save_generator`? Its ``config.json``
    carries the format marker (or, from version 1, exactly the keys that version wrote) and an
    orbax ``params/`` folder lies beside it, and nothing else but the sample grid."""
    cfg_path = os.path.join(path, "config.json")
    if not (os.path.isdir(path) and os.path.isfile(cfg_path) and os.path.isdir(os.path.join(path, "params"))):
        return False
    try:
        with open(cfg_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    if not isinstance(meta, dict) or not isinstance(meta.get("format_version"), int):
        return False
    if meta.get("format") != MODEL_FORMAT and set(meta) != {"format_version", "family", "config", "source"}:
        return False
    return set(os.listdir(path)) <= {"config.json", "params", "samples.png"}


def check_model_out(out_dir: str, force: bool = False, sources=()) -> str:
    """Refuse an output directory that would lose data when replaced; returns its real path.

    ``out_dir`` may be new, an empty directory, or (with ``force``) a converted model. It must not
    be, contain, or lie inside any of ``sources`` (the files or folders being converted).
    """
    out = real_target(out_dir)
    for src in sources:
        if src and (is_within(out, src) or is_within(src, out)):
            raise ConfigError(
                f"output {out_dir!r} and the source {src!r} overlap (one is, or is inside, the other); "
                "writing there would destroy the source. Give an output directory outside the source"
            )
    if not os.path.lexists(out):
        return out
    if not os.path.isdir(out):
        raise ConfigError(f"output {out_dir!r} exists and is not a directory; give a new directory path")
    if not os.listdir(out):
        return out
    if is_converted_model(out):
        if force:
            return out
        raise ConfigError(
            f"output {out_dir!r} already holds a converted model; pass --force (force=True) to replace it, "
            "or give a new directory"
        )
    raise ConfigError(
        f"output {out_dir!r} is a non-empty directory that is not a converted model; nothing was written. "
        "Give a new or empty directory"
    )


def save_generator(model: Generator, out_dir: str, source: dict | None = None, *, force: bool = False,
                   sources=()) -> str:
    """Write ``config.json`` and the orbax parameters into ``out_dir`` atomically.

    ``out_dir`` must be new or empty, or a converted model and ``force`` given (see
    :func:`check_model_out`); through a symbolic link, the linked directory is replaced.
    """
    import orbax.checkpoint as ocp

    out = check_model_out(out_dir, force, sources)
    tmp = staging_dir(out)
    try:
        meta = {
            "format": MODEL_FORMAT,
            "format_version": FORMAT_VERSION,
            "family": model.family,
            "config": dict(model.config),
            "source": source or {},
        }
        state = nnx.to_pure_dict(nnx.state(model))
        state = jax.tree_util.tree_map(np.asarray, state)
        with ocp.StandardCheckpointer() as ckptr:
            ckptr.save(os.path.join(tmp, "params"), state)
            ckptr.wait_until_finished()
        with open(os.path.join(tmp, "config.json"), "w") as f:
            json.dump(meta, f, indent=2, sort_keys=True)
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def build(family: str, config: dict) -> Generator:
    """A generator of ``family`` with ``config`` and placeholder (zero) parameters."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown generator family {family!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[family](**config)


def abstract(family: str, config: dict) -> Generator:
    """The generator with shape-only parameters (no memory), for checking key maps."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown generator family {family!r}; known: {sorted(FAMILIES)}")
    return nnx.eval_shape(lambda: FAMILIES[family](**config))


def load_dir(path: str) -> Generator:
    """Rebuild a generator from a directory written by :func:`save_generator`."""
    import orbax.checkpoint as ocp

    cfg_path = os.path.join(path, "config.json")
    if not os.path.isfile(cfg_path):
        raise CheckpointError(
            f"{path!r} is not a converted model directory (no config.json); "
            "convert a checkpoint first: panda-jax convert SRC OUT"
        )
    with open(cfg_path) as f:
        meta = json.load(f)
    model = abstract(meta["family"], meta["config"])
    graphdef, abs_state = nnx.split(model)
    target = jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), nnx.to_pure_dict(abs_state)
    )
    try:
        with ocp.StandardCheckpointer() as ckptr:
            restored = ckptr.restore(os.path.abspath(os.path.join(path, "params")), target)
    except Exception as e:  # orbax raises many kinds
        raise CheckpointError(
            f"cannot read the parameters in {path!r}/params ({type(e).__name__}: {e}); "
            "convert the checkpoint again"
        ) from None
    nnx.replace_by_pure_dict(abs_state, restored)
    model = nnx.merge(graphdef, abs_state)
    model._source_json = json.dumps(meta.get("source", {}), sort_keys=True)
    return model
