"""StyleGAN (v1) as genforce builds it, in Flax NNX.

Architecture (NHWC)::

    w  = mapping(z)                                     # pixel norm + `mapping_layers` dense (gain sqrt 2)
    wp = truncate(repeat(w, num_ws), w_avg)             # num_ws = 2 * log2(resolution) - 2
    layer 0:  x = const
    layer i:  x = blur(conv(up(x)))   (first layer of a block above 4x4; fused_scale: transposed conv)
              x = conv(x)             (second layer of a block)
    every layer then: x += noise * noise_weight; x += bias; lrelu; instance norm;
                      x = x * (style_scale + 1) + style_shift   (style = affine(wp[:, i]))
    image = toRGB(x)                                    # 1x1, linear, the final resolution's

``C(res) = min(fmaps_base // res, fmaps_max)``. ``fused_scale="auto"`` uses the fused transposed
convolution from 128 px on (genforce's default). Stored noise maps are used (genforce's
``randomize_noise=False``). Only the final ToRGB matters for a fully grown network (``lod = 0``).

Layer indices are the original PandA code's (start 2): ``Z`` at layer ``l`` is the output of the
block at resolution ``2^(l-1)`` (genforce ``synthesis.layer{2l-5}``), ``l = 3 .. log2(resolution)``.

Truncation: ``features(lat, l, truncation=psi)`` moves the first ``G.trunc_layers`` rows of
``wp`` (default 18, PandA's) towards ``w_avg`` (genforce's rule); ``G.trunc_layers`` is a plain
attribute, settable after loading.

W space (see :class:`~ported_gens.base.StyleGenerator`): row ``i`` of w+ drives ``convs[i]``
(genforce's ``layer{i}``, ``i = 0`` the const layer), whose style affine
``first_projection_weights`` returns for that row.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
from flax import nnx

from . import ops
from .base import Buffer, StyleGenerator, register_family
from .config import Choice, setting
from .genforce_common import DEFAULT_TRUNC_LAYERS, GenforceStyleConfig, truncate_genforce

AUTO_FUSED_MIN_RES = 128
BLUR_121 = ops.setup_filter([1, 2, 1])


@dataclasses.dataclass(frozen=True, kw_only=True)
class StyleGANConfig(GenforceStyleConfig):
    """genforce's ``StyleGANGenerator`` settings; the defaults are the official models' (only
    ``resolution`` differs between them). ``fused_scale``: ``"auto"`` (fused from 128 px on),
    ``True`` or ``False``."""

    family: ClassVar[str] = "stylegan"
    fused_scale: bool | str = setting(Choice(True, False, "auto"), "auto")

    def fused_at(self, res: int) -> bool:
        """Whether the block at ``res`` upsamples with the fused transposed convolution."""
        return res >= AUTO_FUSED_MIN_RES if self.fused_scale == "auto" else bool(self.fused_scale)


class StyleLayer(nnx.Module):
    """One StyleGAN conv layer (see the module docstring). ``weight [3,3,in,out]`` (absent for the
    const layer), ``bias``, ``noise_weight [C]``, ``noise [1,res,res,1]``, ``style`` (w -> 2C)."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, *, conv: bool, up: bool, fused: bool):
        self.has_conv = bool(conv)
        self.up = bool(up)
        self.fused = bool(fused)
        if conv:
            self.conv = ops.EqualConv(in_ch, out_ch, 3, gain=ops.SQRT2, bias=False)
        self.bias = nnx.Param(ops.zeros(out_ch))
        self.noise_weight = nnx.Param(ops.zeros(out_ch))
        self.noise = Buffer(ops.zeros(1, resolution, resolution, 1))
        self.style = ops.EqualDense(w_dim, 2 * out_ch, gain=1.0)
        self.out_ch = int(out_ch)

    def __call__(self, x, w, impl: str = "phase"):
        if self.has_conv:
            k = self.conv.scaled()
            if self.up and self.fused:
                k = jnp.pad(k, ((1, 1), (1, 1), (0, 0), (0, 0)))
                k = k[1:, 1:] + k[:-1, 1:] + k[1:, :-1] + k[:-1, :-1]
                x = ops.conv_transpose2d(x, k, stride=2, padding=1, impl=impl)
            else:
                if self.up:
                    x = ops.upsample_nearest(x)
                x = ops.conv2d(x, k, 1)
            if self.up:
                x = ops.blur(x, BLUR_121, 1)
        x = x + self.noise[...] * ops.row(self.noise_weight[...])
        x = ops.lrelu(x + ops.row(self.bias[...]))
        x = ops.instance_norm(x)
        style = self.style(w)
        scale, shift = style[:, : self.out_ch], style[:, self.out_ch :]
        return x * (ops.per_sample(scale) + 1.0) + ops.per_sample(shift)


@register_family("stylegan")
class StyleGAN(StyleGenerator):
    """genforce's ``StyleGANGenerator`` (``lod = 0``) behind the Generator interface."""

    Config = StyleGANConfig

    def __init__(self, config: StyleGANConfig | dict | None = None, /, **settings):
        super().__init__(config, **settings)
        cfg = self.cfg
        self.trunc_layers = DEFAULT_TRUNC_LAYERS
        self.impl = "phase"
        nf, w_dim = cfg.nf, cfg.w_dim

        self.mapping = ops.MappingNetwork(
            cfg.z_dim, w_dim, cfg.mapping_fmaps, cfg.mapping_layers,
            lr_mul=cfg.mapping_lr_mul, gain=ops.SQRT2, act_gain=1.0,
        )
        self.w_avg = Buffer(ops.zeros(w_dim))
        self.const = nnx.Param(ops.zeros(1, 4, 4, nf(4)))
        layers = [
            StyleLayer(nf(4), nf(4), w_dim, 4, conv=False, up=False, fused=False),
            StyleLayer(nf(4), nf(4), w_dim, 4, conv=True, up=False, fused=False),
        ]
        shapes = {}
        for r in range(3, cfg.log2 + 1):
            res = 2**r
            shapes[r] = (res // 2, res // 2, nf(res // 2))
            layers.append(StyleLayer(nf(res // 2), nf(res), w_dim, res, conv=True, up=True, fused=cfg.fused_at(res)))
            layers.append(StyleLayer(nf(res), nf(res), w_dim, res, conv=True, up=False, fused=False))
        self.convs = nnx.List(layers)
        self.torgb = ops.EqualConv(nf(cfg.resolution), cfg.image_channels, 1, gain=1.0)
        self._shapes = tuple(sorted(shapes.items()))

    def _layer_shapes(self):
        return dict(self._shapes)

    def _truncate(self, wp, psi: float):
        return truncate_genforce(self, wp, psi)

    def _style_weight(self, row: int):
        return self.convs[row].style.weight[...].T  # genforce's layer{row}.style: [2 * C, w_dim]

    def _blocks(self, x, wp, start: int, stop: int):
        """Blocks at resolutions ``2^start .. 2^(stop-1)``."""
        for r in range(start, stop):
            i = 2 * (r - 2)
            if i == 0:
                x = jnp.broadcast_to(self.const[...], (wp.shape[0],) + self.const.shape[1:])
            x = self.convs[i](x, wp[:, i], impl=self.impl)
            x = self.convs[i + 1](x, wp[:, i + 1], impl=self.impl)
        return x

    def _features_from_wp(self, wp, layer: int):
        return self._blocks(None, wp, 2, layer), {"wp": wp}

    def _render(self, Z, layer: int, ctx: dict):
        x = self._blocks(Z, ctx["wp"], layer, self.cfg.log2 + 1)
        img = self.torgb(x)
        return jnp.tanh(img) if self.cfg.final_tanh else img
