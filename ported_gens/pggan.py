"""PGGAN (progressive growing of GANs, fully grown) as genforce builds it, in Flax NNX.

Architecture (NHWC)::

    x = pixel_norm(z).reshape(N, 1, 1, z_dim)
    block 4x4:    x = conv4x4(pn(x), pad 3) ; x = conv3x3(pn(x))        # lrelu after each conv
    block 2^r:    x = conv3x3(up(pn(x)))    ; x = conv3x3(pn(x))        # r = 3 .. log2(resolution)
    image = toRGB(pn(x))                                                # 1x1, linear

``pn`` is the pixel norm every conv block applies to its input; ``up`` nearest x2 upsampling,
or with ``fused_scale`` a stride-2 transposed convolution with the 4-tap summed kernel.
``C(res) = min(fmaps_base // res, fmaps_max)``. Only the final ToRGB matters for a fully grown
network (``lod = 0``); the lower-resolution ones are not part of the port.

Layer indices are the original PandA code's (start 2): ``Z`` at layer ``l`` is the output of the
block at resolution ``2^(l-1)``, ``l = 3 .. log2(resolution)``; resuming runs the blocks from
``2^l`` on, and the first of them pixel-normalises ``Z`` (an edited ``Z`` included). PGGAN has
no truncation.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax.numpy as jnp
from flax import nnx

from panda_jax.errors import ConfigError

from . import ops
from .base import Generator, as_latents, check_truncation, register_family
from .config import Flag, setting
from .genforce_common import GenforceConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class PGGANConfig(GenforceConfig):
    """genforce's ``PGGANGenerator`` settings; the defaults are the official models' (only
    ``resolution`` differs between them)."""

    family: ClassVar[str] = "pggan"
    fused_scale: bool = setting(Flag(), False)


@register_family("pggan")
class PGGAN(Generator):
    """genforce's ``PGGANGenerator`` (``lod = 0``) behind the Generator interface."""

    Config = PGGANConfig

    def __init__(self, config: PGGANConfig | dict | None = None, /, **settings):
        super().__init__(config, **settings)
        cfg = self.cfg
        self.impl = "phase"
        nf, gain = cfg.nf, ops.SQRT2
        convs = [ops.EqualConv(cfg.z_dim, nf(4), 4, gain=gain), ops.EqualConv(nf(4), nf(4), 3, gain=gain)]
        shapes = {}
        for r in range(3, cfg.log2 + 1):
            res = 2**r
            shapes[r] = (res // 2, res // 2, nf(res // 2))
            convs.append(ops.EqualConv(nf(res // 2), nf(res), 3, gain=gain))
            convs.append(ops.EqualConv(nf(res), nf(res), 3, gain=gain))
        self.convs = nnx.List(convs)
        self.torgb = ops.EqualConv(nf(cfg.resolution), cfg.image_channels, 1, gain=1.0)
        self._shapes = tuple(sorted(shapes.items()))

    @property
    def z_dim(self) -> int:
        return self.cfg.z_dim

    def _layer_shapes(self):
        return dict(self._shapes)

    def _check_truncation(self, truncation) -> float:
        if check_truncation(self.family, truncation) != 1.0:
            raise ConfigError(f"pggan has no truncation; got truncation={truncation!r}, use 1.0")
        return 1.0

    def _first_projection(self, layers):
        """genforce/sefa's PGGAN weight: the first conv (4x4 kernel on the 1x1 pixel-normalised z),
        stored weight ``[4, 4, z_dim, C]`` flipped in space, as ``[C * 4 * 4, z_dim]`` with the rows
        in sefa's (channel, row, column) order."""
        if layers is not None:
            raise ConfigError(f"pggan's first projection is its first layer; give layers=None, not {layers!r}")
        w = self.convs[0].weight[...][::-1, ::-1]  # [kh, kw, z, C]
        return jnp.transpose(w, (3, 0, 1, 2)).reshape(-1, self.z_dim)

    def _conv(self, i: int, x):
        conv = self.convs[i]
        x = ops.pixel_norm(x)
        if i == 0:
            y = conv(x, padding=3)  # 1x1 input, 4x4 kernel -> 4x4
        elif i % 2 == 0 and self.cfg.fused_scale:
            w = jnp.pad(conv.scaled(), ((1, 1), (1, 1), (0, 0), (0, 0)))
            w = w[1:, 1:] + w[:-1, 1:] + w[1:, :-1] + w[:-1, :-1]
            y = conv.add_bias(ops.conv_transpose2d(x, w, stride=2, padding=1, impl=self.impl))
        else:
            if i % 2 == 0:
                x = ops.upsample_nearest(x)
            y = conv(x)
        return ops.lrelu(y)

    def _blocks(self, x, start: int, stop: int):
        """Blocks at resolutions ``2^start .. 2^(stop-1)``."""
        for r in range(start, stop):
            x = self._conv(2 * (r - 2), x)
            x = self._conv(2 * (r - 2) + 1, x)
        return x

    def _features(self, lat, layer: int, truncation: float):
        self._check_truncation(truncation)
        z = as_latents(lat).z
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ConfigError(f"pggan: z has shape {tuple(z.shape)}; expected [N, {self.z_dim}]")
        x = ops.pixel_norm(z).reshape(z.shape[0], 1, 1, self.z_dim)
        return self._blocks(x, 2, layer), {}

    def _render(self, Z, layer: int, ctx: dict):
        x = self._blocks(Z, layer, self.cfg.log2 + 1)
        img = self.torgb(ops.pixel_norm(x))
        return jnp.tanh(img) if self.cfg.final_tanh else img
