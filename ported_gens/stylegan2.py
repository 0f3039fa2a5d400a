"""StyleGAN2 (config F, skip architecture) as genforce builds it, in Flax NNX.

Architecture (NHWC)::

    w    = mapping(z)                                   # pixel norm + `mapping_layers` dense
    wp   = truncate(repeat(w, num_ws), w_avg)           # num_ws = 2 * log2(resolution) - 2
    x    = const                                        # [N, 4, 4, C(4)]
    for i in 0 .. num_convs-1:                          # num_convs = num_ws - 1
        x = convs[i](x, wp[:, i])                       # odd i: x2 upsampling conv
        if i even:                                      # after the last conv of every resolution
            skip = torgbs[i // 2](x, wp[:, i + 1]) + upsample2d(skip)
    image = skip

``C(res) = min(fmaps_base // res, fmaps_max)``. Every conv layer adds its stored noise map
(genforce's ``randomize_noise=False``) times a learned strength.

Layer indices are the original PandA code's (start 0): ``Z`` at layer ``l`` is the input of
``convs[l]``, i.e. the const for ``l = 0`` and the output of ``convs[l-1]`` after, for
``l = 0 .. num_convs-1`` (0 .. 16 at 1024 px).

Resuming. ``ctx`` carries ``wp`` and, for ``l >= 1``, ``skip``: the RGB skip sum of the
resolutions already done. By default :meth:`render` continues it, so
``render(*features(z, l), l) == generate(z)``. The original PandA code restarts the skip sum
instead (it resumes with ``x`` only, so the first ToRGB at or after ``l`` starts a fresh image and
the RGB of the lower resolutions is dropped); set ``G.restart_skip = True`` (a plain attribute,
settable after loading; it is a compile-time switch) to reproduce those images. Continuing from
a zero ``ctx["skip"]`` gives exactly the same images (``rgb + upsample(0) == rgb``), so a batch
may mix both behaviours.

Truncation: ``features(lat, l, truncation=psi)`` moves the first ``G.trunc_layers`` rows of
``wp`` (default 18, PandA's) towards ``w_avg`` by ``psi`` (genforce's rule); set
``G.trunc_layers`` to truncate fewer layers.

W space (see :class:`~ported_gens.base.StyleGenerator`): ``G.mapping(z)``, ``G.w_avg``,
``G.wp``, ``G.features_from_wp``, ``G.generate_from_wp``. Row ``i`` of w+ drives ``convs[i]``
(genforce's ``layer{i}``) and, for even ``i``, ``torgbs[i // 2]`` reads row ``i + 1``; the last
row drives only the last ToRGB (genforce's ``output{last}``), so
``first_projection_weights(layers)`` takes ``convs[i].style`` for row ``i`` and the last ToRGB's
style for the last row, as genforce/sefa does.

``conv_clamp`` (NVlabs networks: 256) clamps every conv and ToRGB output to +-conv_clamp;
genforce networks have none.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from panda_jax.errors import ConfigError, FeatureError

from . import ops
from .base import Buffer, StyleGenerator, register_family
from .config import Choice, FamilyConfig, Float, Int, Kind, setting
from .genforce_common import DEFAULT_TRUNC_LAYERS, RESOLUTIONS, GenforceStyleConfig, truncate_genforce


@dataclasses.dataclass(frozen=True, kw_only=True)
class StyleGAN2Config(GenforceStyleConfig):
    """genforce's ``StyleGAN2Generator`` settings (config F, skip architecture); the defaults are
    the official models' (only ``resolution`` differs between them), ``conv_clamp`` NVlabs'
    (256 in NVlabs networks, none in genforce's)."""

    family: ClassVar[str] = "stylegan2"
    fmaps_base: int = setting(Int(), 32 << 10)
    conv_clamp: float | None = setting(Float(positive=True, optional=True), None)

    @property
    def num_convs(self) -> int:
        return self.num_ws - 1


@register_family("stylegan2")
class StyleGAN2(StyleGenerator):
    """genforce's ``StyleGAN2Generator`` (skip architecture) behind the Generator interface."""

    Config = StyleGAN2Config

    def __init__(self, config: StyleGAN2Config | dict | None = None, /, **settings):
        super().__init__(config, **settings)
        cfg = self.cfg
        self.trunc_layers = DEFAULT_TRUNC_LAYERS
        self.restart_skip = False
        self.impl = "phase"  # upsampling-conv implementation, see ops.conv_transpose2d
        nf = cfg.nf

        self.mapping = ops.MappingNetwork(
            cfg.z_dim, cfg.w_dim, cfg.mapping_fmaps, cfg.mapping_layers, lr_mul=cfg.mapping_lr_mul
        )
        self.w_avg = Buffer(ops.zeros(cfg.w_dim))
        self.const = nnx.Param(ops.zeros(1, 4, 4, nf(4)))
        convs, torgbs, shapes = [], [], {0: (4, 4, nf(4))}
        for i in range(cfg.num_convs):
            res = 4 * 2 ** ((i + 1) // 2)
            up = 2 if i % 2 == 1 else 1
            cin = nf(res // 2) if up == 2 else nf(res)
            convs.append(
                ops.ModulatedConv(cin, nf(res), 3, cfg.w_dim, resolution=res, up=up, conv_clamp=cfg.conv_clamp)
            )
            shapes[i + 1] = (res, res, nf(res))
            if i % 2 == 0:
                torgbs.append(
                    ops.ModulatedConv(
                        nf(res), cfg.image_channels, 1, cfg.w_dim, resolution=res,
                        demodulate=False, noise=False, activation="linear", conv_clamp=cfg.conv_clamp,
                    )
                )
        self.convs = nnx.List(convs)
        self.torgbs = nnx.List(torgbs)
        # Z at num_convs would be the last conv's output (the full forward): not a resumable layer.
        shapes.pop(cfg.num_convs)
        self._shapes = tuple(sorted(shapes.items()))

    @property
    def num_convs(self) -> int:
        return self.cfg.num_convs

    def _layer_shapes(self):
        return dict(self._shapes)

    # ---- pieces -------------------------------------------------------------------------
    def _truncate(self, wp, psi: float):
        return truncate_genforce(self, wp, psi)

    def _style_weight(self, row: int):
        layer = self.convs[row] if row < self.num_convs else self.torgbs[-1]  # genforce: output{last}
        return layer.style.weight[...].T

    def _run(self, x, wp, start: int, stop: int, skip):
        """Convs ``start .. stop-1`` with the skip sum; returns ``(x, skip)``."""
        for i in range(start, stop):
            x = self.convs[i](x, wp[:, i], impl=self.impl)
            if i % 2 == 0:
                rgb = self.torgbs[i // 2](x, wp[:, i + 1])
                skip = rgb if skip is None else rgb + ops.upsample2d(skip)
        return x, skip

    # ---- interface ----------------------------------------------------------------------
    def _features_from_wp(self, wp, layer: int):
        x = jnp.broadcast_to(self.const[...], (wp.shape[0],) + self.const.shape[1:])
        x, skip = self._run(x, wp, 0, layer, None)
        ctx = {"wp": wp}
        if skip is not None:
            ctx["skip"] = skip
        return x, ctx

    def _render(self, Z, layer: int, ctx: dict):
        if self.restart_skip:
            skip = None
        elif layer > 0 and "skip" not in ctx:
            raise ConfigError(
                f"stylegan2: resuming at layer {layer} needs ctx['skip'] (the RGB skip sum); pass the ctx "
                "that features() returned, or set G.restart_skip = True to restart the skip sum as PandA does"
            )
        else:
            skip = ctx.get("skip")
        _, img = self._run(Z, ctx["wp"], layer, self.num_convs, skip)
        return jnp.tanh(img) if self.cfg.final_tanh else img


# ---- rosinality's stylegan2-pytorch -------------------------------------------------------

ROSINALITY_FAMILY = "stylegan2_rosinality"
W_AVG_FROM_FILE = "latent_avg"
W_AVG_ESTIMATED = "mean_latent"
MEAN_LATENT_SAMPLES = 4096
MEAN_LATENT_SEED = 200


def rosinality_channels(size: int, channel_multiplier: int) -> tuple[int, ...]:
    """The channel table of rosinality's ``Generator`` (``self.channels``) at 4, 8, ..., ``size``:
    512 up to 32 px, then ``256 * cm`` at 64 px, halving per resolution (``16 * cm`` at 1024)."""
    table = {4: 512, 8: 512, 16: 512, 32: 512}
    table.update({64 * 2**k: (256 >> k) * channel_multiplier for k in range(5)})
    return tuple(table[4 * 2**k] for k in range(size.bit_length() - 2))


class _OptionalInt(Int):
    """A positive integer, or ``None``."""

    want = "a positive integer or null"

    def __call__(self, where, name, value, example=None):
        return None if value is None else super().__call__(where, name, value, example)


class _Channels(Kind):
    """Channel counts per resolution (4, 8, ..., size) as a tuple of positive integers, or ``None``."""

    want = "a list of positive channel counts, one per resolution 4, 8, ..., size (or null)"

    def __call__(self, where, name, value, example=None):
        if value is None:
            return None
        try:
            items = tuple(value)
        except TypeError:
            items = ()
        if not items or any(isinstance(c, (bool, np.bool_)) or not isinstance(c, (int, np.integer)) or c < 1
                            for c in items):
            self.fail(where, name, value, fix="give e.g. channels=[512, 512, 512, 512, 256] for 64 px, or null")
        return tuple(int(c) for c in items)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StyleGAN2RosinalityConfig(FamilyConfig):
    """rosinality's ``Generator(size, style_dim, n_mlp, channel_multiplier, lr_mlp=lr_mlp)``
    (blur kernel ``[1, 3, 3, 1]``), in rosinality's names.

    ``channels``: the channel count at 4, 8, ..., ``size`` px, as read off a checkpoint's shapes
    (community models change the table); ``None`` means rosinality's table for
    ``channel_multiplier`` (:func:`rosinality_channels`). ``channel_multiplier`` is ``None`` when
    the table is not rosinality's for any multiplier. ``w_avg_source`` says where ``w_avg`` (the
    truncation centre) came from: ``"latent_avg"``, the file's (``convert_weight.py`` stores
    TF's ``dlatent_avg``), or ``"mean_latent"``, estimated on conversion as rosinality's
    ``G.mean_latent(4096)``: the mean of ``mapping(z)`` over ``MEAN_LATENT_SAMPLES`` z drawn with
    ``numpy.random.RandomState(MEAN_LATENT_SEED).randn`` (float32).
    """

    family: ClassVar[str] = ROSINALITY_FAMILY
    size: int = setting(Choice(*RESOLUTIONS))
    style_dim: int = setting(Int(), 512)
    n_mlp: int = setting(Int(), 8)
    channel_multiplier: int | None = setting(_OptionalInt(), 2)
    channels: tuple[int, ...] | None = setting(_Channels(), None)
    lr_mlp: float = setting(Float(positive=True), 0.01)
    w_avg_source: str = setting(Choice(W_AVG_FROM_FILE, W_AVG_ESTIMATED), W_AVG_FROM_FILE)

    def check(self):
        n = self.log2 - 1
        if self.channels is None:
            if self.channel_multiplier is None:
                self.fail("give channel_multiplier (rosinality's table) or channels (one count per resolution)")
            return
        if len(self.channels) != n:
            self.fail(
                f"channels has {len(self.channels)} entries but a {self.size} px generator has {n} resolutions "
                f"(4 .. {self.size}); give one channel count per resolution"
            )
        cm = self.channel_multiplier
        if cm is not None and self.channels != rosinality_channels(self.size, cm):
            self.fail(
                f"channels {list(self.channels)} is not rosinality's table for channel_multiplier {cm} "
                f"({list(rosinality_channels(self.size, cm))}); set channel_multiplier=null for a custom table"
            )

    @property
    def table(self) -> tuple[int, ...]:
        """Channels at 4, 8, ..., size."""
        return self.channels if self.channels is not None else rosinality_channels(self.size, self.channel_multiplier)

    def nf(self, res: int) -> int:
        return self.table[res.bit_length() - 3]

    # the genforce StyleGAN2 settings the shared module structure reads
    resolution = property(lambda self: self.size)
    z_dim = property(lambda self: self.style_dim)
    w_dim = property(lambda self: self.style_dim)
    mapping_fmaps = property(lambda self: self.style_dim)
    mapping_layers = property(lambda self: self.n_mlp)
    mapping_lr_mul = property(lambda self: self.lr_mlp)
    image_channels = 3
    final_tanh = False
    conv_clamp = None

    @property
    def log2(self) -> int:
        return self.size.bit_length() - 1

    @property
    def num_ws(self) -> int:
        """rosinality's ``n_latent``."""
        return 2 * self.log2 - 2

    @property
    def num_convs(self) -> int:
        """rosinality's ``num_layers`` (StyledConvs, noise buffers)."""
        return self.num_ws - 1


@register_family(ROSINALITY_FAMILY)
class StyleGAN2Rosinality(StyleGAN2):
    """rosinality's stylegan2-pytorch ``Generator`` on the genforce port's modules.

    The maths are the same layers (rosinality's stored modulation bias holds the +1 that the port
    adds, its upsampling conv weights are the port's flipped; the converter maps both). What
    differs is where a resume starts and the truncation:

    - layers ``l = 0 .. num_convs``: ``Z`` at ``l`` is the const (``l = 0``) or the output of
      StyledConv number ``l`` (``conv1``, then ``convs[l-2]``), including the last conv;
    - ``ctx["skip"]`` (``l >= 2``) is the RGB skip sum of the ToRGBs whose input conv lies
      *before* ``l``; :meth:`render` applies every ToRGB whose input conv is ``>= l``, so at an odd
      ``l`` (a block's output) the block's ToRGB reads the edited ``Z``;
    - truncation moves every row of w+ (rosinality's ``truncation_latent`` rule, no cut-off).

    Latent rows and noise buffers: conv ``c`` reads row ``c - 1`` and ``noises.noise_{c-1}``, the
    ToRGB after conv ``c`` (odd ``c``) row ``c``.
    """

    Config = StyleGAN2RosinalityConfig

    def __init__(self, config: StyleGAN2RosinalityConfig | dict | None = None, /, **settings):
        super().__init__(config, **settings)
        n, res = self.cfg.num_convs, self.cfg.size
        self._shapes = tuple(sorted({**dict(self._shapes), n: (res, res, self.cfg.nf(res))}.items()))

    def _truncate(self, wp, psi: float):
        return ops.truncate(wp, self.w_avg[...], psi, self.num_ws)

    def _advance(self, x, wp, start: int, stop: int, skip, staged: bool = False):
        """From ``Z`` at ``start`` towards ``stop``: at each ``c`` in ``start .. stop-1`` the ToRGB of
        conv ``c`` (odd ``c``), then conv ``c + 1`` (if any). Returns ``(x, skip)``. ``staged``:
        each conv and ToRGB is its own compiled program (the public methods)."""
        for c in range(start, stop):
            if c % 2 == 1:
                torgb = self.torgbs[(c - 1) // 2]
                skip = _staged_rgb(*nnx.split(torgb), x, wp[:, c], skip) if staged else _rgb_step(torgb, x, wp[:, c], skip)
            if c < self.num_convs:
                conv = self.convs[c]
                x = _staged_conv(*nnx.split(conv), x, wp[:, c], self.impl) if staged else conv(x, wp[:, c], impl=self.impl)
        return x, skip

    def _const(self, n: int):
        return jnp.broadcast_to(self.const[...], (n,) + self.const.shape[1:])

    def _skip_for(self, layer: int, ctx: dict):
        if self.restart_skip:
            return None
        if layer >= 2 and "skip" not in ctx:
            raise ConfigError(
                f"{ROSINALITY_FAMILY}: resuming at layer {layer} needs ctx['skip'] (the RGB skip image so far); "
                "pass the ctx that features() returned"
            )
        return ctx.get("skip")

    @staticmethod
    def _ctx(wp, skip) -> dict:
        return {"wp": wp} if skip is None else {"wp": wp, "skip": skip}

    # Generator contract: one program per call (for a caller's jit, sample_fn, image_fn).
    def _features_from_wp(self, wp, layer: int):
        x, skip = self._advance(self._const(wp.shape[0]), wp, 0, layer, None)
        return x, self._ctx(wp, skip)

    def _render(self, Z, layer: int, ctx: dict):
        return self._advance(Z, ctx["wp"], layer, self.num_convs + 1, self._skip_for(layer, ctx))[1]

    # ---- public API, staged -------------------------------------------------------------
    # The public methods run one compiled program per conv and per ToRGB, each compiled once and
    # reused by every start and stop layer (as StyleGAN3's and BigGAN's do), instead of one
    # whole-network program per (method, layer). Same numbers as the pure methods above.

    def features_from_wp(self, wp, layer: int):
        wp = self.check_wp(wp)
        layer = self.check_layer(layer)
        x, skip = self._advance(self._const(wp.shape[0]), wp, 0, layer, None, staged=True)
        return x, self._ctx(wp, skip)

    def features(self, lat, layer: int, truncation: float = 1.0):
        layer = self.check_layer(layer)
        return self.features_from_wp(self.wp(lat, truncation), layer)

    def render(self, Z, layer: int, ctx: dict):
        layer = self.check_layer(layer)
        Z = self.check_features(Z, layer)
        if not isinstance(ctx, dict) or "wp" not in ctx:
            raise FeatureError("ctx has no 'wp'; pass the ctx that features() returned with Z")
        wp = self.check_wp(ctx["wp"])
        skip = self._skip_for(layer, ctx)
        return self._advance(Z, wp, layer, self.num_convs + 1, None if skip is None else jnp.asarray(skip), staged=True)[1]

    def generate_from_wp(self, wp):
        wp = self.check_wp(wp)
        return self._advance(self._const(wp.shape[0]), wp, 0, self.num_convs + 1, None, staged=True)[1]

    def generate(self, lat, truncation: float = 1.0):
        return self.generate_from_wp(self.wp(lat, truncation))


def _rgb_step(torgb, x, w, skip):
    """rosinality's ``ToRGB``: the RGB of ``x`` plus the upsampled skip image so far."""
    rgb = torgb(x, w)
    return rgb if skip is None else rgb + ops.upsample2d(skip)


@partial(jax.jit, static_argnums=(0, 4))
def _staged_conv(graphdef, state, x, w, impl: str):
    return nnx.merge(graphdef, state)(x, w, impl=impl)


@partial(jax.jit, static_argnums=(0,))
def _staged_rgb(graphdef, state, x, w, skip):
    return _rgb_step(nnx.merge(graphdef, state), x, w, skip)
