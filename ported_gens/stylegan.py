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
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from flax import nnx

from panda_jax.errors import ConfigError

from . import ops
from .base import Buffer, Generator, as_latents, register_family
from .stylegan2 import DEFAULT_TRUNC_LAYERS, channels, check_resolution, check_truncation

AUTO_FUSED_MIN_RES = 128
BLUR_121 = ops.setup_filter([1, 2, 1])


class StyleLayer(nnx.Module):
    """One StyleGAN conv layer (see the module docstring). ``weight [3,3,in,out]`` (absent for the
    const layer), ``bias``, ``noise_weight [C]``, ``noise [1,res,res,1]``, ``style`` (w -> 2C)."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, *, conv: bool, up: bool, fused: bool):
        self.has_conv = bool(conv)
        self.up = bool(up)
        self.fused = bool(fused)
        if conv:
            self.conv = ops.EqualConv(in_ch, out_ch, 3, gain=ops.SQRT2, bias=False)
        self.bias = nnx.Param(jnp.zeros((out_ch,), jnp.float32))
        self.noise_weight = nnx.Param(jnp.zeros((out_ch,), jnp.float32))
        self.noise = Buffer(jnp.zeros((1, resolution, resolution, 1), jnp.float32))
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
class StyleGAN(Generator):
    """genforce's ``StyleGANGenerator`` (``lod = 0``) behind the Generator interface."""

    def __init__(
        self,
        resolution: int,
        z_dim: int = 512,
        w_dim: int = 512,
        mapping_layers: int = 8,
        mapping_fmaps: int = 512,
        mapping_lr_mul: float = 0.01,
        fmaps_base: int = 16 << 10,
        fmaps_max: int = 512,
        fused_scale: str | bool = "auto",
        image_channels: int = 3,
        final_tanh: bool = False,
    ):
        resolution = check_resolution("stylegan", resolution)
        if fused_scale not in (True, False, "auto"):
            raise ConfigError(f"stylegan: fused_scale {fused_scale!r} must be true, false or \"auto\"")
        for name, v in (("z_dim", z_dim), ("w_dim", w_dim), ("mapping_layers", mapping_layers), ("mapping_fmaps", mapping_fmaps)):
            if int(v) < 1:
                raise ConfigError(f"stylegan: {name} = {v!r} must be a positive integer")
        if channels(resolution, fmaps_base, fmaps_max) < 1:
            raise ConfigError(f"stylegan: fmaps_base {fmaps_base} / fmaps_max {fmaps_max} leave no channels at {resolution} px")
        super().__init__(
            dict(
                resolution=resolution,
                z_dim=int(z_dim),
                w_dim=int(w_dim),
                mapping_layers=int(mapping_layers),
                mapping_fmaps=int(mapping_fmaps),
                mapping_lr_mul=float(mapping_lr_mul),
                fmaps_base=int(fmaps_base),
                fmaps_max=int(fmaps_max),
                fused_scale=fused_scale,
                image_channels=int(image_channels),
                final_tanh=bool(final_tanh),
            )
        )
        self.resolution = resolution
        self._z = int(z_dim)
        self.w_dim = int(w_dim)
        self.final_tanh = bool(final_tanh)
        self.trunc_layers = DEFAULT_TRUNC_LAYERS
        self.impl = "phase"
        self.final_log2 = int(math.log2(resolution))
        self.num_ws = 2 * self.final_log2 - 2
        nf = lambda r: channels(r, fmaps_base, fmaps_max)  # noqa: E731

        self.mapping = ops.MappingNetwork(
            self._z, self.w_dim, int(mapping_fmaps), int(mapping_layers),
            lr_mul=float(mapping_lr_mul), gain=ops.SQRT2, act_gain=1.0,
        )
        self.w_avg = Buffer(jnp.zeros((self.w_dim,), jnp.float32))
        self.const = nnx.Param(jnp.zeros((1, 4, 4, nf(4)), jnp.float32))
        layers = [
            StyleLayer(nf(4), nf(4), self.w_dim, 4, conv=False, up=False, fused=False),
            StyleLayer(nf(4), nf(4), self.w_dim, 4, conv=True, up=False, fused=False),
        ]
        shapes = {}
        for r in range(3, self.final_log2 + 1):
            res = 2**r
            fused = res >= AUTO_FUSED_MIN_RES if fused_scale == "auto" else bool(fused_scale)
            shapes[r] = (res // 2, res // 2, nf(res // 2))
            layers.append(StyleLayer(nf(res // 2), nf(res), self.w_dim, res, conv=True, up=True, fused=fused))
            layers.append(StyleLayer(nf(res), nf(res), self.w_dim, res, conv=True, up=False, fused=False))
        self.convs = nnx.List(layers)
        self.torgb = ops.EqualConv(nf(resolution), int(image_channels), 1, gain=1.0)
        self._shapes = tuple(sorted(shapes.items()))

    @property
    def z_dim(self) -> int:
        return self._z

    def _layer_shapes(self):
        return dict(self._shapes)

    def wp(self, lat, truncation: float):
        """``wp [N, num_ws, w_dim]``: mapped, repeated, truncated."""
        psi = check_truncation(self.family, truncation)
        z = as_latents(lat).z
        if z.ndim != 2 or z.shape[1] != self._z:
            raise ConfigError(f"stylegan: z has shape {tuple(z.shape)}; expected [N, {self._z}]")
        w = self.mapping(z)
        wp = jnp.broadcast_to(w[:, None, :], (w.shape[0], self.num_ws, self.w_dim))
        return ops.truncate(wp, self.w_avg[...], psi, self.trunc_layers)

    def _blocks(self, x, wp, start: int, stop: int):
        """Blocks at resolutions ``2^start .. 2^(stop-1)``."""
        for r in range(start, stop):
            i = 2 * (r - 2)
            if i == 0:
                x = jnp.broadcast_to(self.const[...], (wp.shape[0],) + self.const.shape[1:])
            x = self.convs[i](x, wp[:, i], impl=self.impl)
            x = self.convs[i + 1](x, wp[:, i + 1], impl=self.impl)
        return x

    def _features(self, lat, layer: int, truncation: float):
        wp = self.wp(lat, truncation)
        return self._blocks(None, wp, 2, layer), {"wp": wp}

    def _render(self, Z, layer: int, ctx: dict):
        x = self._blocks(Z, ctx["wp"], layer, self.final_log2 + 1)
        img = self.torgb(x)
        return jnp.tanh(img) if self.final_tanh else img

    def _generate(self, lat, truncation: float):
        Z, ctx = self._features(lat, 3, truncation)
        return self._render(Z, 3, ctx)
