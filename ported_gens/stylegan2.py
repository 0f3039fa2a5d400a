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

``conv_clamp`` (NVlabs networks: 256) clamps every conv and ToRGB output to +-conv_clamp;
genforce networks have none.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from flax import nnx

from panda_jax.errors import ConfigError

from . import ops
from .base import Buffer, Generator, as_latents, register_family

RESOLUTIONS = (8, 16, 32, 64, 128, 256, 512, 1024)
DEFAULT_TRUNC_LAYERS = 18


def check_resolution(family: str, resolution) -> int:
    if resolution not in RESOLUTIONS:
        raise ConfigError(f"{family}: resolution {resolution!r} is not supported; use one of {list(RESOLUTIONS)}")
    return int(resolution)


def channels(res: int, fmaps_base: int, fmaps_max: int) -> int:
    """Feature maps at resolution ``res`` (genforce ``get_nf``)."""
    return min(int(fmaps_base) // int(res), int(fmaps_max))


def check_truncation(family: str, truncation) -> float:
    psi = float(truncation)
    if not math.isfinite(psi) or psi < 0:
        raise ConfigError(f"{family}: truncation {truncation!r} must be a finite number >= 0 (1.0 = none)")
    return psi


@register_family("stylegan2")
class StyleGAN2(Generator):
    """genforce's ``StyleGAN2Generator`` (skip architecture) behind the Generator interface."""

    def __init__(
        self,
        resolution: int,
        z_dim: int = 512,
        w_dim: int = 512,
        mapping_layers: int = 8,
        mapping_fmaps: int = 512,
        mapping_lr_mul: float = 0.01,
        fmaps_base: int = 32 << 10,
        fmaps_max: int = 512,
        image_channels: int = 3,
        final_tanh: bool = False,
        conv_clamp: float | None = None,
    ):
        resolution = check_resolution("stylegan2", resolution)
        for name, v in (("z_dim", z_dim), ("w_dim", w_dim), ("mapping_layers", mapping_layers), ("mapping_fmaps", mapping_fmaps)):
            if int(v) < 1:
                raise ConfigError(f"stylegan2: {name} = {v!r} must be a positive integer")
        if channels(resolution, fmaps_base, fmaps_max) < 1:
            raise ConfigError(
                f"stylegan2: fmaps_base {fmaps_base} / fmaps_max {fmaps_max} leave no channels at {resolution} px"
            )
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
                image_channels=int(image_channels),
                final_tanh=bool(final_tanh),
                conv_clamp=None if conv_clamp is None else float(conv_clamp),
            )
        )
        self.resolution = resolution
        self._z = int(z_dim)
        self.w_dim = int(w_dim)
        self.final_tanh = bool(final_tanh)
        self.trunc_layers = DEFAULT_TRUNC_LAYERS
        self.restart_skip = False
        self.impl = "phase"  # upsampling-conv implementation, see ops.conv_transpose2d

        log2 = int(math.log2(resolution))
        self.num_ws = 2 * log2 - 2
        self.num_convs = self.num_ws - 1
        nf = lambda r: channels(r, fmaps_base, fmaps_max)  # noqa: E731

        self.mapping = ops.MappingNetwork(
            self._z, self.w_dim, int(mapping_fmaps), int(mapping_layers), lr_mul=float(mapping_lr_mul)
        )
        self.w_avg = Buffer(jnp.zeros((self.w_dim,), jnp.float32))
        self.const = nnx.Param(jnp.zeros((1, 4, 4, nf(4)), jnp.float32))
        convs, torgbs, shapes = [], [], {0: (4, 4, nf(4))}
        for i in range(self.num_convs):
            res = 4 * 2 ** ((i + 1) // 2)
            up = 2 if i % 2 == 1 else 1
            cin = nf(res // 2) if up == 2 else nf(res)
            convs.append(
                ops.ModulatedConv(cin, nf(res), 3, self.w_dim, resolution=res, up=up, conv_clamp=conv_clamp)
            )
            shapes[i + 1] = (res, res, nf(res))
            if i % 2 == 0:
                torgbs.append(
                    ops.ModulatedConv(
                        nf(res), int(image_channels), 1, self.w_dim, resolution=res,
                        demodulate=False, noise=False, activation="linear", conv_clamp=conv_clamp,
                    )
                )
        self.convs = nnx.List(convs)
        self.torgbs = nnx.List(torgbs)
        # Z at num_convs would be the last conv's output (the full forward): not a resumable layer.
        shapes.pop(self.num_convs)
        self._shapes = tuple(sorted(shapes.items()))

    @property
    def z_dim(self) -> int:
        return self._z

    def _layer_shapes(self):
        return dict(self._shapes)

    # ---- pieces -------------------------------------------------------------------------
    def mapping_w(self, z):
        """``w [N, w_dim]`` from ``z [N, z_dim]``."""
        return self.mapping(z)

    def wp(self, lat, truncation: float):
        """``wp [N, num_ws, w_dim]``: mapped, repeated, truncated."""
        psi = check_truncation(self.family, truncation)
        z = as_latents(lat).z
        if z.ndim != 2 or z.shape[1] != self._z:
            raise ConfigError(f"stylegan2: z has shape {tuple(z.shape)}; expected [N, {self._z}]")
        w = self.mapping(z)
        wp = jnp.broadcast_to(w[:, None, :], (w.shape[0], self.num_ws, self.w_dim))
        return ops.truncate(wp, self.w_avg[...], psi, self.trunc_layers)

    def _run(self, x, wp, start: int, stop: int, skip):
        """Convs ``start .. stop-1`` with the skip sum; returns ``(x, skip)``."""
        for i in range(start, stop):
            x = self.convs[i](x, wp[:, i], impl=self.impl)
            if i % 2 == 0:
                rgb = self.torgbs[i // 2](x, wp[:, i + 1])
                skip = rgb if skip is None else rgb + ops.upsample2d(skip)
        return x, skip

    # ---- interface ----------------------------------------------------------------------
    def _features(self, lat, layer: int, truncation: float):
        wp = self.wp(lat, truncation)
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
        return jnp.tanh(img) if self.final_tanh else img

    def _generate(self, lat, truncation: float):
        Z, ctx = self._features(lat, 0, truncation)
        return self._render(Z, 0, ctx)
