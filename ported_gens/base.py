"""The Generator interface every ported family implements, and the converted-directory format.

A family subclasses :class:`Generator` (or :class:`StyleGenerator`, for families with a W
space), names its config class (``Config``, a :class:`~ported_gens.config.FamilyConfig`) and
implements pure methods, all traced under ``jit`` with ``layer`` and ``truncation`` static:

``_layer_shapes()``
    ``{layer: (H, W, C)}`` for every usable layer index (the original PandA code's indices).
``_features(lat, layer, truncation)``
    ``(Z, ctx)``: ``Z`` the feature map ``[N, H, W, C]`` at ``layer``; ``ctx`` a dict of arrays
    that resuming needs (w+, BigGAN's cond vector, StyleGAN2's skip image, ...).
``_render(Z, layer, ctx)``
    the image ``[N, H, W, 3]`` from resuming at ``layer`` with (possibly edited) ``Z``.
``_generate(lat, truncation)``
    the whole forward; the default is ``_render(*_features(...))`` at the first layer.
``_first_projection(layers)``
    the weights that first project the latent (SeFa), ``[out, latent_dim]``.

``render(*features(lat, l), l)`` equals ``generate(lat)`` for every family and layer.

The public methods wrap these in one cached ``jit`` per method and static settings
(:meth:`Generator._jit`). :meth:`Generator.sample_fn`, :meth:`Generator.image_fn` and
:meth:`Generator.image_fn_w` hand out the same computations as pure functions of the parameter
state (``fn(state, ...)``), for a caller's own ``jit``, ``vmap``, ``grad``, ``jacrev``, ``jvp``.

A :class:`StyleGenerator` (StyleGAN, StyleGAN2, StyleGAN3) has ``G.has_w``, the ``mapping``
network ``z -> w``, ``w_avg``, ``num_ws`` rows of w+ and implements ``_truncate(wp, psi)``,
``_features_from_wp(wp, layer)`` and ``_style_weight(row)``; the rest of its interface
(:meth:`Generator.wp`, :meth:`Generator.features_from_wp`, :meth:`Generator.generate_from_wp`)
is shared. Other families have ``G.has_w == False``; their W methods raise ConfigError.

Images are NHWC float (nominally [-1, 1]); feature maps are NHWC.

A converted model is a directory holding ``config.json`` (family, constructor config, source
file name and sha256) and ``params/``, an orbax checkpoint of the module's state.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
from functools import lru_cache, partial
from typing import Any, Callable, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from panda_jax._io import is_within, real_target, replace_dir, staging_dir
from panda_jax.errors import CheckpointError, ConfigError, FeatureError, LayerError, PandaError, first_line

from .config import FamilyConfig

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


def check_truncation(family: str, truncation) -> float:
    """``truncation`` as a Python float: a finite number >= 0 (1.0 = none), else a ConfigError."""
    ok = not isinstance(truncation, (bool, np.bool_)) and np.ndim(truncation) == 0
    try:
        psi = float(truncation) if ok else math.nan
    except (TypeError, ValueError):
        psi = math.nan
    if not math.isfinite(psi) or psi < 0:
        raise ConfigError(f"{family}: truncation {truncation!r} must be a finite number >= 0 (1.0 = none)")
    return psi


@dataclasses.dataclass(frozen=True)
class PureMethod:
    """``fn(state, *arrays)``: the generator method ``name`` (with the keyword settings
    ``static``) of the generator rebuilt from ``graphdef`` and ``state``. A pure function of
    arrays, hashable and equal for equal generator structure and settings, so it can be a
    static argument of ``jax.jit`` and compose with ``vmap``, ``grad``, ``jacrev``, ``jvp``."""

    graphdef: Any
    name: str
    static: tuple

    def __call__(self, state, *args, **kwargs):
        return getattr(nnx.merge(self.graphdef, state), self.name)(*args, **kwargs, **dict(self.static))


@lru_cache(maxsize=256)
def _pure_method(graphdef, name: str, static: tuple) -> PureMethod:
    return PureMethod(graphdef, name, static)


@partial(jax.jit, static_argnames=("fn",))
def _call(fn: PureMethod, state, traced: dict):
    return fn(state, **traced)


@partial(jax.jit, static_argnums=(0,))
def _apply(graphdef, state, args):
    return nnx.merge(graphdef, state)(*args)


def stage(module: nnx.Module, *args):
    """``module(*args)`` as one compiled program, cached per module structure and input shapes.
    Families that run stage by stage (StyleGAN3's layers, BigGAN's blocks) call their stages
    with it, so every layer choice reuses the same few programs; inside a caller's ``jit`` the
    stages simply inline."""
    graphdef, state = nnx.split(module)
    return _apply(graphdef, state, args)


class _RequiresW:
    """A W-space attribute on a family without one: reading it raises a ConfigError. Families
    with a W space set the attribute or override it (this descriptor has no ``__set__``)."""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        obj._require_w(self.name)


class Generator(nnx.Module):
    """Base class of the ported generators (see the module docstring).

    ``Family(**settings)``, ``Family(config_dict)`` or ``Family(FamilyConfig)``: the settings
    are checked once by the family's ``Config`` (unknown names and bad values raise ConfigError).
    """

    family: ClassVar[str] = "?"
    Config: ClassVar[type[FamilyConfig]] = FamilyConfig
    has_w: ClassVar[bool] = False
    """Whether the family has a W space (mapping network, w+)."""

    mapping = _RequiresW()
    w_avg = _RequiresW()
    num_ws = _RequiresW()
    w_dim = _RequiresW()

    def __init__(self, config: FamilyConfig | dict | None = None, /, **settings):
        # Hashable and frozen: a static attribute, part of the graph definition.
        self.cfg = self.Config.from_dict(config, **settings)

    @property
    def config(self) -> dict:
        """The constructor settings as a plain-JSON dict (``config.json`` stores it)."""
        return self.cfg.to_dict()

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

    def _first_projection(self, layers):
        raise NotImplementedError

    def _check_truncation(self, truncation) -> float:
        """The truncation as a Python float (a compile-time constant), or a ConfigError."""
        return check_truncation(self.family, truncation)

    # ---- pure pieces shared by the function forms ---------------------------------------
    def _sample_features(self, key, n: int, *, layer: int, truncation: float):
        return self._features(as_latents(self.sample_latents(key, n)), layer, truncation)[0]

    def _image_of_z(self, z, classes=None, *, truncation: float):
        return self._generate(Latents(z, classes), truncation)

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

    def check_features(self, Z, layer: int, note: str = ""):
        """``Z`` as an array, or a FeatureError unless it is ``[N, H, W, C]`` of ``layer``."""
        Z = jnp.asarray(Z)
        want = self._layer_shapes()[layer]
        if Z.ndim != 4 or tuple(Z.shape[1:]) != tuple(want):
            raise FeatureError(
                f"Z of shape {tuple(Z.shape)} cannot resume this {self.family} generator at layer {layer}; "
                f"expected [N, {want[0]}, {want[1]}, {want[2]}] (NHWC{note})"
            )
        return Z

    def sample_latents(self, key, n: int):
        """Standard-normal z of shape ``[n, z_dim]``."""
        return jax.random.normal(key, (int(n), self.z_dim), jnp.float32)

    def _jit(self, method, static: tuple, **traced):
        """Run ``method`` under one cached ``jit``: ``static`` (name, value) pairs are compile-time
        constants, ``traced`` keyword arrays are traced."""
        fn, state = self._pure(method, static)
        return _call(fn, state, traced)

    def _pure(self, method: str, static: tuple):
        """``(PureMethod, state)``; the function is the same object for the same structure and settings."""
        graphdef, state = nnx.split(self)
        return _pure_method(graphdef, method, static), state

    def features(self, lat, layer: int, truncation: float = 1.0):
        """``(Z, ctx)``: the feature map ``[N, H, W, C]`` at ``layer`` and what resuming needs."""
        layer = self.check_layer(layer)
        psi = self._check_truncation(truncation)
        return self._jit("_features", (("layer", layer), ("truncation", psi)), lat=as_latents(lat))

    def render(self, Z, layer: int, ctx: dict):
        """The image ``[N, H, W, 3]`` from resuming the generator at ``layer`` with ``Z``."""
        layer = self.check_layer(layer)
        return self._jit("_render", (("layer", layer),), Z=jnp.asarray(Z), ctx=ctx)

    def generate(self, lat, truncation: float = 1.0):
        """The image ``[N, H, W, 3]`` of the whole forward."""
        psi = self._check_truncation(truncation)
        return self._jit("_generate", (("truncation", psi),), lat=as_latents(lat))

    def sample_fn(self, layer: int, truncation: float = 1.0):
        """``(fn, args)``: ``fn(args, key, n)`` draws ``n`` latents with ``key`` (as
        :meth:`sample_latents`) and returns their features ``[n, H, W, C]`` at ``layer``.

        ``fn`` is a pure, hashable function (the same object for the same generator structure,
        layer and truncation, so ``jax.jit`` caches hit); ``args`` is the parameter state, a
        pytree. This is what ``panda_jax.fit_stream(fn, ranks, ..., sample_args=args)`` and
        ``panda_jax.hosvd_init(fn, rank_c, sample_args=args)`` take; ``n`` must be static."""
        layer = self.check_layer(layer)
        psi = self._check_truncation(truncation)
        return self._pure("_sample_features", (("layer", layer), ("truncation", psi)))

    def image_fn(self, truncation: float = 1.0):
        """``(fn, args)``: ``fn(args, z)`` (BigGAN: ``fn(args, z, classes)``) is the image
        ``[N, H, W, 3]`` of the latents ``z [N, z_dim]``, as :meth:`generate`; a pure function
        for ``jax.jacrev`` / ``jax.jvp`` / ``vmap`` (Jacobians for GANSpace, SeFa, ReSeFa).
        ``args`` is the parameter state."""
        psi = self._check_truncation(truncation)
        return self._pure("_image_of_z", (("truncation", psi),))

    def first_projection_weights(self, layers=None):
        """The weights that first project the latent, ``[out, latent_dim]`` (SeFa's, in PyTorch's
        ``[out, in]`` layout): SeFa's directions are the top eigenvectors of ``W^T W`` after
        genforce/sefa normalises every row (output unit) of ``W`` to unit length.

        StyleGAN/2/3: the style affine layers of the w+ rows ``layers`` (genforce/sefa's
        ``layer_idx``, ``0 .. num_ws-1``; default all), stacked; see :class:`StyleGenerator`.
        DCGAN, PGGAN, BigGAN: the first layer's weights (``layers`` must be ``None``); see the
        family's ``_first_projection``."""
        return jnp.asarray(self._first_projection(layers))

    # ---- the W space (StyleGenerator families) ------------------------------------------
    def _require_w(self, what: str):
        if not self.has_w:
            raise ConfigError(
                f"{self.family} has no W space (no mapping network, no w+), so it has no {what}; "
                "check G.has_w. Use its z space: G.features / G.generate / G.image_fn"
            )

    def wp(self, lat=None, truncation: float = 1.0, *, w=None):
        """w+ ``[N, num_ws, w_dim]``: ``z`` (or Latents) mapped, or ``w=[N, w_dim]`` as given,
        repeated over the ``num_ws`` rows and truncated towards ``w_avg`` (the family's rule)."""
        self._require_w("wp")
        if (lat is None) == (w is None):
            raise ConfigError("wp() takes either latents z (first argument) or w=...; give exactly one")
        psi = self._check_truncation(truncation)
        if w is not None:
            w = jnp.asarray(w)
            if w.ndim != 2 or w.shape[1] != self.w_dim:
                raise FeatureError(f"w has shape {tuple(w.shape)}; this {self.family} expects [N, {self.w_dim}]")
            return self._jit("_wp_from_w", (("truncation", psi),), w=w)
        return self._jit("_wp", (("truncation", psi),), lat=as_latents(lat))

    def check_wp(self, wp):
        """``wp`` as an array, or a FeatureError unless it is ``[N, num_ws, w_dim]``."""
        self._require_w("w+")
        wp = jnp.asarray(wp)
        if wp.ndim != 3 or wp.shape[1:] != (self.num_ws, self.w_dim):
            raise FeatureError(
                f"w+ has shape {tuple(wp.shape)}; this {self.family} takes [N, {self.num_ws}, {self.w_dim}] "
                "(G.wp(z) makes one)"
            )
        return wp

    def features_from_wp(self, wp, layer: int):
        """``(Z, ctx)`` as :meth:`features`, from w+ ``[N, num_ws, w_dim]`` (edited or not)."""
        wp = self.check_wp(wp)
        layer = self.check_layer(layer)
        return self._jit("_features_from_wp", (("layer", layer),), wp=wp)

    def generate_from_wp(self, wp):
        """The image ``[N, H, W, 3]`` from w+ ``[N, num_ws, w_dim]``."""
        wp = self.check_wp(wp)
        return self._jit("_generate_from_wp", (), wp=wp)

    def image_fn_w(self):
        """``(fn, args)``: ``fn(args, wp)`` is the image of w+ ``[N, num_ws, w_dim]``, a pure
        function of arrays (for ``jax.jacrev`` / ``jax.jvp`` / ``vmap``); ``args`` the state."""
        self._require_w("image_fn_w")
        return self._pure("_generate_from_wp", ())


class StyleGenerator(Generator):
    """A generator with a W space: ``w = mapping(z)``, repeated into w+ ``[N, num_ws, w_dim]``
    and truncated towards ``w_avg``; the synthesis reads one row of w+ per style layer.

    A family sets ``self.mapping`` (an ``nnx.Module``, ``mapping(z) -> w [N, w_dim]``) and
    ``self.w_avg`` (a :class:`Buffer` ``[w_dim]``, usable as an array; ``w_avg[...]`` is the
    ``jax.Array``), its config has ``z_dim``, ``w_dim`` and ``num_ws``, and it implements
    ``_truncate(wp, psi)``, ``_features_from_wp(wp, layer)``, ``_render`` and
    ``_style_weight(row) -> [out, w_dim]`` (the affine layer reading w+ row ``row``, its stored
    weight in PyTorch's layout, without the equalised-learning-rate scale, as genforce/sefa
    reads it).
    """

    has_w = True

    @property
    def num_ws(self) -> int:
        """Rows of w+ (one per style input)."""
        return self.cfg.num_ws

    @property
    def w_dim(self) -> int:
        return self.cfg.w_dim

    @property
    def z_dim(self) -> int:
        return self.cfg.z_dim

    def _truncate(self, wp, psi: float):
        raise NotImplementedError

    def _features_from_wp(self, wp, layer: int):
        raise NotImplementedError

    def _style_weight(self, row: int):
        raise NotImplementedError

    def _wp_from_w(self, w, truncation: float):
        wp = jnp.broadcast_to(w[:, None, :], (w.shape[0], self.num_ws, self.w_dim))
        return self._truncate(wp, truncation)

    def _wp(self, lat, truncation: float):
        z = as_latents(lat).z
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ConfigError(f"{self.family}: z has shape {tuple(z.shape)}; expected [N, {self.z_dim}]")
        return self._wp_from_w(self.mapping(z), truncation)

    def _features(self, lat, layer: int, truncation: float):
        return self._features_from_wp(self._wp(lat, truncation), layer)

    def _generate_from_wp(self, wp):
        first = min(self._layer_shapes())
        Z, ctx = self._features_from_wp(wp, first)
        return self._render(Z, first, ctx)

    def _generate(self, lat, truncation: float):
        return self._generate_from_wp(self._wp(lat, truncation))

    def _first_projection(self, layers):
        if layers is None:
            rows = list(range(self.num_ws))
        else:
            items = [layers] if isinstance(layers, (int, np.integer)) else list(layers)
            if not items or any(isinstance(r, bool) or not isinstance(r, (int, np.integer)) or not 0 <= r < self.num_ws
                                for r in items):
                raise ConfigError(
                    f"layers={layers!r}: give w+ rows (genforce/sefa's layer_idx) in 0..{self.num_ws - 1}, "
                    "or None for all of them; these are style layers, not the feature layers of G.layers"
                )
            rows = sorted({int(r) for r in items})
        return jnp.concatenate([self._style_weight(r) for r in rows], axis=0)


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
        if os.path.getsize(cfg_path) > MAX_CONFIG_BYTES:
            return False
        with open(cfg_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
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


# No released generator of these families comes near this (BigGAN-deep 512, the largest, holds
# about 0.25 GB); a config asking for more is damaged or hostile and is refused on its shapes alone.
MAX_MODEL_BYTES = 2 << 30
MAX_CONFIG_BYTES = 1 << 20


def _family_class(family) -> type[Generator]:
    if not isinstance(family, str) or family not in FAMILIES:
        raise ConfigError(f"unknown generator family {family!r}; known: {sorted(FAMILIES)}")
    return FAMILIES[family]


def _nbytes(shape, dtype) -> int:
    return math.prod(int(d) for d in shape) * np.dtype(dtype).itemsize


def _path_str(path) -> str:
    return ".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def model_bytes(model: Generator) -> tuple[int, str, tuple]:
    """``(total bytes, largest tensor's name, its shape)`` of ``model``'s parameters and buffers
    (concrete or abstract; nothing is allocated)."""
    leaves = jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(nnx.state(model)))
    total, big = 0, (0, "", ())
    for path, leaf in leaves:
        n = _nbytes(leaf.shape, leaf.dtype)
        total += n
        if n > big[0]:
            big = (n, _path_str(path), tuple(leaf.shape))
    return total, big[1], big[2]


def abstract(family: str, config: dict) -> Generator:
    """The generator with shape-only parameters (no memory), for checking key maps and sizes.

    A config whose parameters would take more than :data:`MAX_MODEL_BYTES` is a ConfigError
    (named by its largest tensor): nothing of that size is allocated."""
    cls = _family_class(family)
    cfg = cls.Config.from_dict(config)  # names and values checked first (ConfigError)
    try:
        model = nnx.eval_shape(lambda: cls(cfg))
    except PandaError:
        raise
    except (OverflowError, ValueError, TypeError, MemoryError) as e:  # shapes beyond what JAX can describe
        raise ConfigError(
            f"{family}: the config {cfg.to_dict()} gives shapes that cannot be built ({first_line(e, 160)}); "
            "check its sizes"
        ) from None
    total, name, shape = model_bytes(model)
    if total > MAX_MODEL_BYTES:
        raise ConfigError(
            f"{family}: this config would need {total / 2**30:.3g} GiB of parameters (largest: {name} "
            f"{list(shape)}), more than the {MAX_MODEL_BYTES >> 30} GiB any released model needs; check its sizes "
            f"({', '.join(f'{k}={v}' for k, v in cfg.to_dict().items() if isinstance(v, int) and not isinstance(v, bool))})"
        )
    return model


def build(family: str, config: dict) -> Generator:
    """A generator of ``family`` with ``config`` and placeholder (zero) parameters. Its size is
    checked on the abstract model first (:func:`abstract`)."""
    abstract(family, config)
    return _family_class(family)(**config)


def _bad_dir(path: str, what: str, fix: str = "convert the checkpoint again (panda-jax convert SRC OUT --force)"):
    return CheckpointError(f"converted model {path!r}: {what}; {fix}")


def read_model_config(path: str) -> dict:
    """The ``config.json`` of the converted model directory ``path``, checked: a JSON object of
    at most :data:`MAX_CONFIG_BYTES` with a known ``family``, a ``config`` object and a
    supported ``format_version``. Every failure is a :class:`CheckpointError` naming the fix."""
    cfg_path = os.path.join(path, "config.json")
    if not os.path.isdir(path):
        raise CheckpointError(
            f"{path!r} is not a converted model directory; convert a checkpoint first: panda-jax convert SRC OUT"
        )
    if not os.path.isfile(cfg_path):
        raise CheckpointError(
            f"{path!r} is not a converted model directory (no config.json); "
            "convert a checkpoint first: panda-jax convert SRC OUT"
        )
    try:
        size = os.path.getsize(cfg_path)
        if size > MAX_CONFIG_BYTES:
            raise _bad_dir(path, f"config.json is {size} bytes, far more than a converted model's "
                                 f"(at most {MAX_CONFIG_BYTES} read)")
        with open(cfg_path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise CheckpointError(f"cannot read {cfg_path!r} ({e.strerror or e}); check the path and its permissions") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise _bad_dir(path, f"config.json is larger than {MAX_CONFIG_BYTES} bytes")
    if not raw.strip():
        raise _bad_dir(path, "config.json is empty")

    def refuse_constant(name):
        raise ValueError(f"{name} is not a JSON number")

    try:
        meta = json.loads(raw.decode("utf-8"), parse_constant=refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise _bad_dir(path, f"config.json is not valid JSON ({first_line(e, 160)})") from None
    if not isinstance(meta, dict):
        raise _bad_dir(path, f"config.json holds a JSON {type(meta).__name__}, not an object")
    version = meta.get("format_version", FORMAT_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _bad_dir(path, f"config.json has format_version {version!r}, not a positive integer")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"converted model {path!r} has format version {version}; this panda-jax reads up to {FORMAT_VERSION}: "
            "upgrade panda-jax, or convert the checkpoint again with this version"
        )
    if "family" not in meta:
        raise _bad_dir(path, f"config.json names no generator family (no 'family'; known: {sorted(FAMILIES)})")
    family = meta["family"]
    if not isinstance(family, str) or family not in FAMILIES:
        shown = family if isinstance(family, str) and len(family) <= 60 else f"a JSON {type(family).__name__}"
        raise _bad_dir(path, f"config.json names the unknown generator family {shown!r} (known: {sorted(FAMILIES)})")
    if "config" not in meta:
        raise _bad_dir(path, "config.json has no 'config' (the generator's settings)")
    if not isinstance(meta["config"], dict):
        raise _bad_dir(path, f"config.json's 'config' is a JSON {type(meta['config']).__name__}, not an object of settings")
    if not isinstance(meta.get("source", {}), dict):
        raise _bad_dir(path, f"config.json's 'source' is a JSON {type(meta['source']).__name__}, not an object")
    return meta


def _stored_metadata(params: str, path: str) -> dict[str, Any]:
    """``{"a.b.name": (shape, dtype)}`` of the arrays orbax stored in ``params`` (read from the
    checkpoint's metadata; no array is read)."""
    import orbax.checkpoint as ocp

    try:
        with ocp.StandardCheckpointer() as ckptr:
            meta = ckptr.metadata(params)
        tree = getattr(meta, "item_metadata", meta)
        leaves = jax.tree_util.tree_leaves_with_path(tree)
    except Exception as e:  # orbax raises many kinds on damaged folders
        raise _bad_dir(path, f"the parameters in params/ are not a readable orbax checkpoint ({first_line(e)})") from None
    out = {}
    for p, leaf in leaves:
        shape, dtype = getattr(leaf, "shape", None), getattr(leaf, "dtype", None)
        if shape is None or dtype is None:
            raise _bad_dir(path, f"params/ stores {_path_str(p)!r} as a {type(leaf).__name__}, not an array")
        out[_path_str(p)] = (tuple(int(d) for d in shape), np.dtype(dtype))
    return out


def _check_against_stored(path: str, family: str, want: dict, stored: dict) -> None:
    if not stored:
        raise _bad_dir(path, "params/ holds no parameters (not a readable orbax checkpoint of a converted model)")
    missing = [k for k in want if k not in stored]
    extra = [k for k in stored if k not in want]

    def names(keys):
        return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

    if missing:
        raise _bad_dir(path, f"params/ lacks {len(missing)} parameter(s) the {family} config needs: {names(missing)}")
    if extra:
        raise _bad_dir(path, f"params/ holds {len(extra)} parameter(s) the {family} config does not have: {names(extra)}")
    for k, (shape, dtype) in want.items():
        s_shape, s_dtype = stored[k]
        if s_shape != shape or s_dtype != dtype:
            raise _bad_dir(
                path,
                f"config.json disagrees with the stored parameters: {k} is stored as {list(s_shape)} {s_dtype} but "
                f"the {family} config needs {list(shape)} {dtype} (config.json edited, or params/ from another model)",
            )


def load_dir(path: str) -> Generator:
    """Rebuild a generator from a directory written by :func:`save_generator`.

    Everything is checked before an array is allocated: ``config.json`` (:func:`read_model_config`),
    the config's names and values (the family's config class), the size the config implies
    (:func:`abstract`), and the abstract model's parameter names, shapes and dtypes against the
    orbax checkpoint's stored metadata. After restoring, every floating tensor must be finite.
    Every failure is a :class:`CheckpointError` (a :class:`~panda_jax.errors.PandaError`)."""
    import orbax.checkpoint as ocp

    meta = read_model_config(path)
    family = meta["family"]
    try:
        model = abstract(family, meta["config"])
    except PandaError as e:
        raise _bad_dir(path, f"config.json does not describe a valid generator ({e})") from None
    params = os.path.abspath(os.path.join(path, "params"))
    if not os.path.isdir(params):
        raise _bad_dir(path, "there is no params/ folder (the parameters)")
    graphdef, abs_state = nnx.split(model)
    pure = nnx.to_pure_dict(abs_state)
    want = {_path_str(p): (tuple(leaf.shape), np.dtype(leaf.dtype))
            for p, leaf in jax.tree_util.tree_leaves_with_path(pure)}
    _check_against_stored(path, family, want, _stored_metadata(params, path))
    target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), pure)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            restored = ckptr.restore(params, target)
    except Exception as e:  # orbax raises many kinds
        raise _bad_dir(path, f"cannot read the parameters in params/ ({first_line(e)})") from None
    for p, leaf in jax.tree_util.tree_leaves_with_path(restored):
        arr = np.asarray(leaf)
        if arr.dtype.kind in "fc":
            bad = arr.size - int(np.count_nonzero(np.isfinite(arr)))
            if bad:
                raise _bad_dir(path, f"parameter {_path_str(p)} holds {bad} NaN/inf value{'s' if bad != 1 else ''} "
                                     "(damaged, or saved from a diverged run)")
    nnx.replace_by_pure_dict(abs_state, restored)
    model = nnx.merge(graphdef, abs_state)
    model._source_json = json.dumps(meta.get("source", {}), sort_keys=True)
    return model
