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
from typing import ClassVar

import jax.numpy as jnp
from flax import nnx

from panda_jax.errors import ConfigError

from . import ops
from .base import Buffer, StyleGenerator, register_family
from .config import Float, Int, setting
from .genforce_common import DEFAULT_TRUNC_LAYERS, GenforceStyleConfig, truncate_genforce


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
