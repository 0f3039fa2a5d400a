"""BigGAN-deep (the HuggingFace ``pytorch-pretrained-BigGAN`` generator) in Flax NNX.

Architecture (NHWC throughout)::

    stem:    cond = [z, classes @ embeddings]               # [N, 2 * z_dim]
             x = (cond @ gen_z + b).reshape(N, 4, 4, 16 * ch)
    blocks:  x = blocks[0] ... blocks[M-1](x)               # GenBlocks, SelfAttn at attention_layer_position
    head:    img = tanh(conv_to_rgb(relu(bn(x))))           # 3x3 conv to RGB

A GenBlock is the bottleneck residual block of BigGAN-deep: four (class-conditional batch norm,
ReLU, conv) stages with 1x1, 3x3, 3x3, 1x1 kernels (nearest x2 upsampling before the first 3x3
conv when ``up``), and a skip path that keeps the first half of the channels when the block
halves them and is upsampled the same way.

Layer indices are the original PandA code's: ``Z`` at layer ``l`` is the output of
``blocks[l-1]`` (the original's ``generator.layers[l-1]``), the self-attention module counted,
for ``l = 1 .. M-1``. Resuming at ``l`` needs
the conditioning vector and the batch-norm statistics selection; both travel in ``ctx``
(``cond`` [N, 2*z_dim], ``bn_rows`` int32 [N, 2], ``bn_weights`` float32 [N, 2]).

Spectral normalisation is baked into the weights when converting (``convert/biggan.py``): the
original's eval path divides each weight by ``u . (W v)`` with its stored ``u`` and ``v`` and never
iterates, so the converted weights are exactly those effective weights.

Batch-norm statistics. The original stores running means and variances for ``n_stats``
truncation values and picks them as ``coef, i = modf(truncation / (1 / (n_stats - 1)))`` in
Python float64: row ``i`` alone when ``coef == 0``, else ``row_i * coef + row_{i+1} * (1 - coef)``
(the weights are the reverse of a linear interpolation; that is what the pretrained models were
run with, so it is kept). :func:`bn_selection` computes this on the host in float64 from the
Python float ``truncation`` (a float32 truncation, 0.699999988 for 0.7, would select other rows);
the selection is then an input array, so one compiled function serves every truncation and a
batch may even mix truncations.

Compilation. :meth:`BigGAN.features`, :meth:`BigGAN.render` and :meth:`BigGAN.generate` run
stage by stage (stem, each block, head), each stage a compiled program cached per input shape:
choosing another layer, resuming from it or generating reuses the same programs instead of
compiling a new whole-network program per layer. Inside an outer ``jit`` the stages inline.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from panda_jax.errors import ConfigError, FeatureError

from . import ops
from .base import Buffer, Generator, Latents, as_latents, register_family, stage
from .config import MAX_DEPTH, FamilyConfig, Float, Int, Kind, setting
from .imagenet import class_index, class_indices, imagenet_classes  # noqa: F401  (BigGAN's classes)

# The BigGAN-deep 128x128 block list: (upsample, input channel multiplier, output multiplier).
DEEP_128_LAYERS = (
    (False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8), (False, 8, 8),
    (True, 8, 4), (False, 4, 4), (True, 4, 2), (False, 2, 2), (True, 2, 1),
)
DEEP_256_LAYERS = DEEP_128_LAYERS[:5] + ((True, 8, 8), (False, 8, 8), (True, 8, 4), (False, 4, 4),
                                         (True, 4, 2), (False, 2, 2), (True, 2, 1))
DEEP_512_LAYERS = DEEP_256_LAYERS + ((False, 1, 1), (True, 1, 1))

CTX_KEYS = ("cond", "bn_rows", "bn_weights")


# ---- ops --------------------------------------------------------------------------------


def _pool2(x):
    """2x2 max pooling, stride 2."""
    n, h, w, c = x.shape
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _pointwise(x, kernel):
    """A 1x1 convolution with a ``[C_in, C_out]`` kernel."""
    return jnp.einsum("nhwc,cd->nhwd", x, kernel)


def _stats(table, rows, weights):
    """Per-sample statistics ``[N, C]`` from the ``[n_stats, C]`` table: the original's
    ``table[i] * coef + table[i + 1] * (1 - coef)`` with ``rows = (i, i + 1)`` and
    ``weights = (coef, 1 - coef)`` (or ``(i, .)`` and ``(1, 0)``)."""
    return table[rows[:, 0]] * weights[:, 0:1] + table[rows[:, 1]] * weights[:, 1:2]


def bn_selection(truncation: float, n_stats: int) -> tuple[tuple[int, int], tuple[float, float]]:
    """Rows of the stored batch-norm statistics and their weights for ``truncation``, exactly
    as the original selects them (Python float64 ``math.modf``, reversed weights)."""
    coef, start = math.modf(truncation / (1.0 / (n_stats - 1)))
    start = int(start)
    if coef != 0.0:
        # For some n_stats (50, 99, 104, ...) truncation 1.0 lands a hair above the last row
        # (1 / (1 / 49) = 49.00000000000001); the original then indexes row n_stats and fails.
        # Here the row past the end is the last one, so the result is that row.
        return (start, min(start + 1, n_stats - 1)), (coef, 1.0 - coef)
    return (start, min(start + 1, n_stats - 1)), (1.0, 0.0)


def check_truncation(truncation) -> float:
    """``truncation`` as the Python float the original would see, or a ConfigError.

    A float32 or float16 value is read as the shortest decimal that rounds to it (``np.float32(0.7)``
    -> 0.7), since the statistics rows depend on the exact float64 value."""
    if isinstance(truncation, jax.core.Tracer):
        raise ConfigError(
            "truncation is a traced value, but it selects stored batch-norm statistics on the host; "
            "pass it as a concrete Python float (a static argument under jit)"
        )
    v = np.asarray(truncation)[()] if np.ndim(truncation) == 0 else None
    if v is None or isinstance(truncation, bool) or not isinstance(v, (np.floating, np.integer)):
        raise ConfigError(f"truncation {truncation!r} is not a number; give a Python float in (0, 1], e.g. 1.0 or 0.7")
    if isinstance(v, np.floating) and v.dtype.itemsize < 8:
        t = float(np.format_float_positional(v, unique=True))
    else:
        t = float(v)
    if not 0.0 < t <= 1.0:
        raise ConfigError(f"truncation {t!r} is outside (0, 1]; BigGAN has batch-norm statistics only for 0 < truncation <= 1")
    return t


# ---- modules ----------------------------------------------------------------------------


class _Linear(nnx.Module):
    def __init__(self, cin: int, cout: int):
        self.kernel = nnx.Param(ops.zeros(cin, cout))
        self.bias = nnx.Param(ops.zeros(cout))

    def __call__(self, x):
        return x @ self.kernel[...] + self.bias[...][None, :]


class _Conv(nnx.Module):
    """A convolution with bias; ``kernel`` is ``[C_in, C_out]`` (1x1) or HWIO ``[3, 3, C_in, C_out]``."""

    def __init__(self, cin: int, cout: int, size: int):
        self.size = size
        self.kernel = nnx.Param(ops.zeros(cin, cout) if size == 1 else ops.zeros(size, size, cin, cout))
        self.bias = nnx.Param(ops.zeros(cout))

    def __call__(self, x):
        if self.size == 1:
            y = _pointwise(x, self.kernel[...])
        else:
            y = ops.conv2d(x, self.kernel[...], self.size // 2)
        return y + ops.row(self.bias[...])


class _CondBatchNorm(nnx.Module):
    """Class-conditional batch norm with stored statistics per truncation:
    ``(x - mean) / sqrt(var + eps) * (1 + cond @ scale) + cond @ offset``.

    A block computes the per-sample gain and shift of its four batch norms at once
    (:func:`_cond_affines`: one matmul instead of eight); this module holds the parameters."""

    def __init__(self, channels: int, cond_dim: int, n_stats: int, eps: float):
        self.eps = eps
        self.scale = nnx.Param(ops.zeros(cond_dim, channels))
        self.offset = nnx.Param(ops.zeros(cond_dim, channels))
        self.means = Buffer(ops.zeros(n_stats, channels))
        self.vars = Buffer(jnp.ones((n_stats, channels), jnp.float32))


def _cond_affines(bns, cond, rows, weights):
    """``[(gain, shift)]`` ``[N, C]`` per batch norm in ``bns``, so that the normalised output is
    ``x * gain + shift``: every gain and shift from one matmul and one statistics gather."""
    if not bns:
        return []
    sizes = [bn.means.shape[1] for bn in bns]
    eps = bns[0].eps  # one eps for the whole generator
    kernel = jnp.concatenate([bn.scale[...] for bn in bns] + [bn.offset[...] for bn in bns], axis=1)
    mean = _stats(jnp.concatenate([bn.means[...] for bn in bns], axis=1), rows, weights)
    var = _stats(jnp.concatenate([bn.vars[...] for bn in bns], axis=1), rows, weights)
    total = sum(sizes)
    both = cond @ kernel
    gain = (1.0 + both[:, :total]) * jax.lax.rsqrt(var + eps)
    shift = both[:, total:] - mean * gain
    out, at = [], 0
    for c in sizes:
        out.append((gain[:, at : at + c], shift[:, at : at + c]))
        at += c
    return out


def _affine(x, gain_shift):
    gain, shift = gain_shift
    return x * ops.per_sample(gain) + ops.per_sample(shift)


class _BatchNorm(nnx.Module):
    """The final, unconditional batch norm (same statistics selection)."""

    def __init__(self, channels: int, n_stats: int, eps: float):
        self.eps = eps
        self.weight = nnx.Param(ops.zeros(channels))
        self.bias = nnx.Param(ops.zeros(channels))
        self.means = Buffer(ops.zeros(n_stats, channels))
        self.vars = Buffer(jnp.ones((n_stats, channels), jnp.float32))

    def __call__(self, x, rows, weights):
        mean = _stats(self.means[...], rows, weights)
        var = _stats(self.vars[...], rows, weights)
        gain = self.weight[...][None, :] * jax.lax.rsqrt(var + self.eps)
        shift = self.bias[...][None, :] - mean * gain
        return x * ops.per_sample(gain) + ops.per_sample(shift)


class _GenBlock(nnx.Module):
    def __init__(self, cin: int, cout: int, cond_dim: int, up: bool, n_stats: int, eps: float):
        mid = cin // 4
        self.up = bool(up)
        self.drop_channels = cin != cout
        self.bn_0 = _CondBatchNorm(cin, cond_dim, n_stats, eps)
        self.conv_0 = _Conv(cin, mid, 1)
        self.bn_1 = _CondBatchNorm(mid, cond_dim, n_stats, eps)
        self.conv_1 = _Conv(mid, mid, 3)
        self.bn_2 = _CondBatchNorm(mid, cond_dim, n_stats, eps)
        self.conv_2 = _Conv(mid, mid, 3)
        self.bn_3 = _CondBatchNorm(mid, cond_dim, n_stats, eps)
        self.conv_3 = _Conv(mid, cout, 1)

    def __call__(self, x, cond, rows, weights):
        affines = _cond_affines([self.bn_0, self.bn_1, self.bn_2, self.bn_3], cond, rows, weights)
        h = self.conv_0(jax.nn.relu(_affine(x, affines[0])))
        h = jax.nn.relu(_affine(h, affines[1]))
        if self.up:
            h = ops.upsample_nearest(h)
        h = self.conv_1(h)
        h = self.conv_2(jax.nn.relu(_affine(h, affines[2])))
        h = self.conv_3(jax.nn.relu(_affine(h, affines[3])))
        skip = x[..., : x.shape[-1] // 2] if self.drop_channels else x
        if self.up:
            skip = ops.upsample_nearest(skip)
        return h + skip


class _SelfAttention(nnx.Module):
    """SAGAN self-attention: keys and values max-pooled 2x2, ``x + gamma * o(attn @ g)``."""

    def __init__(self, channels: int):
        self.theta = nnx.Param(ops.zeros(channels, channels // 8))
        self.phi = nnx.Param(ops.zeros(channels, channels // 8))
        self.g = nnx.Param(ops.zeros(channels, channels // 2))
        self.o = nnx.Param(ops.zeros(channels // 2, channels))
        self.gamma = nnx.Param(jnp.zeros((), jnp.float32))

    def __call__(self, x, cond=None, rows=None, weights=None):
        n, h, w, c = x.shape
        theta = _pointwise(x, self.theta[...]).reshape(n, h * w, c // 8)
        phi = _pool2(_pointwise(x, self.phi[...])).reshape(n, h * w // 4, c // 8)
        attn = jax.nn.softmax(jnp.einsum("nsc,ntc->nst", theta, phi), axis=-1)
        g = _pool2(_pointwise(x, self.g[...])).reshape(n, h * w // 4, c // 2)
        attn_g = jnp.einsum("nst,ntc->nsc", attn, g).reshape(n, h, w, c // 2)
        return x + self.gamma[...] * _pointwise(attn_g, self.o[...])


class _Stem(nnx.Module):
    """``cond = [z, classes @ embeddings]`` and the 4x4 input ``(cond @ gen_z + b)``."""

    def __init__(self, num_classes: int, z_dim: int, channels: int):
        self.embeddings = nnx.Param(ops.zeros(num_classes, z_dim))
        self.gen_z = _Linear(2 * z_dim, 16 * channels)

    def __call__(self, z, classes):
        cond = jnp.concatenate([z, classes @ self.embeddings[...]], axis=1)
        return self.gen_z(cond).reshape(z.shape[0], 4, 4, -1), cond


class _Head(nnx.Module):
    """Batch norm, ReLU, 3x3 conv to RGB (the 3 channels the original keeps), tanh."""

    def __init__(self, channels: int, n_stats: int, eps: float):
        self.bn = _BatchNorm(channels, n_stats, eps)
        # The original's conv_to_rgb has `channels` outputs and keeps the first 3; only those are stored.
        self.conv_to_rgb = _Conv(channels, 3, 3)

    def __call__(self, x, rows, weights):
        return jnp.tanh(self.conv_to_rgb(jax.nn.relu(self.bn(x, rows, weights))))


def _direct(module, *args):
    return module(*args)


# ---- config -----------------------------------------------------------------------------


class Blocks(Kind):
    """BigGAN-deep's block list: ``[upsample, in_mult (int), out_mult (int)]`` per block. The
    upsampling flag is a bool, or 0 / 1 (the original only tests its truth)."""

    want = f"a list of at most {MAX_DEPTH} [upsample (bool), in_mult (int), out_mult (int)] blocks"
    MAX_MULT = 1 << 12

    @staticmethod
    def _flag(u) -> bool:
        return isinstance(u, (bool, np.bool_)) or (isinstance(u, (int, np.integer)) and u in (0, 1))

    def __call__(self, where, name, value, example=None):
        try:  # a string is not a block list (and would iterate into characters)
            blocks = None if isinstance(value, (str, bytes)) else tuple(
                None if isinstance(b, (str, bytes)) else tuple(b) for b in value)
        except TypeError:
            blocks = None
        if not blocks or len(blocks) > MAX_DEPTH or any(
            b is None or len(b) != 3 or not self._flag(b[0])
            or any(isinstance(m, (bool, np.bool_)) or not isinstance(m, (int, np.integer)) or not 1 <= m <= self.MAX_MULT
                   for m in b[1:])
            for b in blocks
        ):
            self.fail(where, name, value, fix="give e.g. [[false, 16, 16], [true, 16, 8], ...] (at least one block)")
        return tuple((bool(u), int(a), int(b)) for u, a, b in blocks)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BigGANConfig(FamilyConfig):
    """BigGAN-deep settings: the HuggingFace ``config.json`` fields. ``layers`` lists the
    blocks (upsample, input and output channel multipliers of ``channel_width``); the self-attention
    module sits before block ``attention_layer_position`` (none when the position is not a block
    index, e.g. negative or ``len(layers)``, as in the original); ``n_stats`` batch-norm
    statistics rows cover truncations 0..1. :meth:`deep` gives the released models' configs.

    Every config the original ``pytorch_pretrained_biggan`` builds and runs with an RGB output is
    accepted: channel counts are floored where the original floors them (the bottleneck
    ``C // 4``, the attention's ``C // 8`` and ``C // 2``), and ``output_dim`` and
    ``class_embed_dim`` are kept but unused, as there (the resolution follows from ``layers``).
    Refused are exactly the configs the original fails on (a zero-channel bottleneck or attention
    projection, blocks whose channels do not chain, ``n_stats`` < 2) and ``channel_width`` < 3,
    where the original's image has fewer than 3 channels."""

    family: ClassVar[str] = "biggan"
    output_dim: int = setting(Int(), 128)  # stored by the original, unused by its model
    z_dim: int = setting(Int(), 128)
    class_embed_dim: int = setting(Int(lo=None), 128)  # stored by the original, unused by its model
    channel_width: int = setting(Int(), 128)
    num_classes: int = setting(Int(), 1000)
    layers: tuple = setting(Blocks(), DEEP_128_LAYERS)
    attention_layer_position: int = setting(Int(lo=None), 8)
    eps: float = setting(Float(), 1e-4)
    n_stats: int = setting(Int(lo=2, hi=1 << 12), 51)

    @classmethod
    def deep(cls, resolution: int = 128, **changes) -> "BigGANConfig":
        """The released BigGAN-deep 128, 256 or 512 (``biggan-deep-{resolution}``)."""
        blocks = {128: DEEP_128_LAYERS, 256: DEEP_256_LAYERS, 512: DEEP_512_LAYERS}
        if resolution not in blocks:
            raise ConfigError(f"biggan: BigGAN-deep was released at 128, 256 and 512 px, not {resolution!r}")
        return cls.from_dict(dict(output_dim=resolution, layers=blocks[resolution]), **changes)

    @property
    def attention(self) -> int | None:
        """The block index the self-attention module precedes, or None (no attention)."""
        return self.attention_layer_position if 0 <= self.attention_layer_position < len(self.layers) else None

    @property
    def resolution(self) -> int:
        """The image size ``layers`` give: 4 doubled at each upsampling block (``output_dim`` is unused)."""
        return 4 * 2 ** sum(u for u, _, _ in self.layers)

    def check(self):
        ch, prev = self.channel_width, 16
        for i, (up, a, b) in enumerate(self.layers):
            if a != prev:
                self.fail(
                    f"layers[{i}] takes {a} x channel_width channels but the previous stage gives {prev}; "
                    "each block's in_mult must equal the previous out_mult (16 for the first block)"
                )
            if b != a and 2 * b != a:
                self.fail(
                    f"layers[{i}]={[up, a, b]}: out_mult must equal in_mult or be half of it (the skip path "
                    "keeps the first half of the channels)"
                )
            if ch * a < 4:
                self.fail(
                    f"layers[{i}]: {ch * a} input channels leave a bottleneck of {ch * a} // 4 = 0 channels; "
                    "the original cannot build it either. Give channel_width * in_mult >= 4"
                )
            prev = b
        if prev != 1:
            self.fail(f"layers end with out_mult {prev}; the last block must give 1 x channel_width channels")
        if ch < 3:
            self.fail(f"channel_width={ch} is below 3; the RGB head keeps the first 3 channels")
        if self.attention is not None:
            c_att = ch * self.layers[self.attention][1]
            if c_att < 8:
                self.fail(
                    f"self-attention before layers[{self.attention}] has {c_att} channels, leaving {c_att} // 8 = 0 "
                    "query and key channels; the original cannot build it either. Give channel_width * in_mult >= 8 "
                    "there, or move attention_layer_position"
                )


# ---- the generator ----------------------------------------------------------------------


@register_family("biggan")
class BigGAN(Generator):
    """BigGAN-deep (see :class:`BigGANConfig`)."""

    Config = BigGANConfig

    def __init__(self, config: BigGANConfig | dict | None = None, /, **settings):
        super().__init__(config, **settings)
        cfg = self.cfg
        ch, cond_dim = cfg.channel_width, 2 * cfg.z_dim
        self.stem = _Stem(cfg.num_classes, cfg.z_dim, 16 * ch)

        modules, kinds, shapes = [], [], []
        res = 4
        for i, (up, a, b) in enumerate(cfg.layers):
            if i == cfg.attention:
                modules.append(_SelfAttention(ch * a))
                kinds.append("attention")
                shapes.append((res, res, ch * a))
            modules.append(_GenBlock(ch * a, ch * b, cond_dim, up, cfg.n_stats, cfg.eps))
            kinds.append("block")
            res *= 2 if up else 1
            shapes.append((res, res, ch * b))
        self.blocks = nnx.List(modules)
        self.kinds = tuple(kinds)
        self.output_shapes = tuple(shapes)
        self.head = _Head(ch, cfg.n_stats, cfg.eps)

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    @property
    def n_stats(self) -> int:
        return self.cfg.n_stats

    # ---- interface ----------------------------------------------------------------------
    @property
    def z_dim(self) -> int:
        return self.cfg.z_dim

    def _layer_shapes(self):
        return {l: self.output_shapes[l - 1] for l in range(1, len(self.kinds))}

    def _check_truncation(self, truncation) -> float:
        return check_truncation(truncation)

    def _first_projection(self, layers):
        """The part of the stem's linear layer acting on ``z`` (``cond = [z, class embedding]``), the
        spectrally normalised ``gen_z`` weight's first ``z_dim`` columns, ``[4 * 4 * 16 * C, z_dim]``
        exactly as the original's ``weight[:, :z_dim]`` (rows in (row, column, channel) order)."""
        if layers is not None:
            raise ConfigError(f"biggan's first projection is its z projection; give layers=None, not {layers!r}")
        return self.stem.gen_z.kernel[...][: self.z_dim].T

    def _inputs(self, lat):
        """``(z [N, z_dim], classes [N, num_classes])`` float32, or a ConfigError."""
        if not isinstance(lat, (Latents, tuple)):
            raise ConfigError(
                "BigGAN needs a class for every sample, but a bare z was given; pass "
                "Latents(z, classes) (classes one-hot [N, num_classes] or class indices [N]) "
                "or draw both with G.sample_latents(key, n, classes=...)"
            )
        lat = as_latents(lat)
        if lat.classes is None:
            raise ConfigError(
                "BigGAN needs a class for every sample, but Latents.classes is None; pass "
                "Latents(z, classes) or draw both with G.sample_latents(key, n, classes=...)"
            )
        z = jnp.asarray(lat.z)
        c = jnp.asarray(lat.classes)
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ConfigError(f"z has shape {tuple(z.shape)}; this BigGAN expects [N, {self.z_dim}]")
        if c.ndim == 1 and jnp.issubdtype(c.dtype, jnp.integer):
            c = jax.nn.one_hot(c, self.num_classes, dtype=jnp.float32)
        if c.shape != (z.shape[0], self.num_classes):
            raise ConfigError(
                f"classes have shape {tuple(c.shape)}; expected [N, {self.num_classes}] class vectors "
                f"(or [N] integer class indices) for the {z.shape[0]} latents"
            )
        return ops.as_float(z), ops.as_float(c)

    def bn_ctx(self, truncation: float, n: int):
        """``(bn_rows int32 [n, 2], bn_weights float32 [n, 2])`` for ``truncation`` (host-side, float64)."""
        rows, weights = bn_selection(check_truncation(truncation), self.n_stats)
        return (
            np.broadcast_to(np.asarray(rows, np.int32), (n, 2)).copy(),
            np.broadcast_to(np.asarray(weights, np.float32), (n, 2)).copy(),
        )

    # Every forward runs ``call(stage_module, *inputs)`` per stage: ``_direct`` inside one
    # program (the pure methods), ``stage`` one compiled program per stage (the public ones).
    def _start(self, lat, truncation: float, call):
        """The stem's output and ``ctx`` (the cond vector and the statistics selection)."""
        z, c = self._inputs(lat)
        rows, weights = (jnp.asarray(a) for a in self.bn_ctx(truncation, z.shape[0]))
        x, cond = call(self.stem, z, c)
        return x, {"cond": cond, "bn_rows": rows, "bn_weights": weights}

    def _blocks(self, x, start: int, stop: int, ctx: dict, call):
        for i in range(start, stop):
            x = call(self.blocks[i], x, ctx["cond"], ctx["bn_rows"], ctx["bn_weights"])
        return x

    def _finish(self, x, start: int, ctx: dict, call):
        """The image from the blocks from ``start`` on and the head."""
        x = self._blocks(x, start, len(self.kinds), ctx, call)
        return call(self.head, x, ctx["bn_rows"], ctx["bn_weights"])

    # Generator contract (one program per call).
    def _features(self, lat, layer, truncation):
        x, ctx = self._start(lat, truncation, _direct)
        return self._blocks(x, 0, layer, ctx, _direct), ctx

    def _render(self, Z, layer, ctx):
        return self._finish(Z, layer, ctx, _direct)

    # ---- public API (truncation resolved on the host, so one compilation serves all) ----
    def features(self, lat, layer: int, truncation: float = 1.0):
        """``(Z, ctx)``: ``Z`` ``[N, H, W, C]`` at ``layer``; ``ctx`` holds the cond vector and the
        batch-norm statistics selection for ``truncation``."""
        layer = self.check_layer(layer)
        x, ctx = self._start(lat, truncation, stage)
        return self._blocks(x, 0, layer, ctx, stage), ctx

    def generate(self, lat, truncation: float = 1.0):
        """The image ``[N, H, W, 3]`` in [-1, 1]."""
        x, ctx = self._start(lat, truncation, stage)
        return self._finish(x, 0, ctx, stage)

    def render(self, Z, layer: int, ctx: dict):
        """The image from resuming at ``layer`` with (possibly edited) ``Z`` and the ``ctx`` that
        :meth:`features` returned."""
        layer = self.check_layer(layer)
        if not isinstance(ctx, dict) or any(k not in ctx for k in CTX_KEYS):
            have = sorted(ctx) if isinstance(ctx, dict) else type(ctx).__name__
            raise ConfigError(
                f"BigGAN ctx must hold {list(CTX_KEYS)} (got {have}); pass the ctx that G.features returned"
            )
        Z = jnp.asarray(Z)
        want = self.output_shapes[layer - 1]
        n = ctx["cond"].shape[0]
        if Z.shape != (n, *want):
            raise FeatureError(
                f"Z has shape {tuple(Z.shape)}; layer {layer} of this BigGAN takes [{n}, {want[0]}, {want[1]}, {want[2]}] "
                "(NHWC, as G.features returns it)"
            )
        return self._finish(Z, layer, ctx, stage)

    def sample_latents(self, key, n: int, classes=None, truncation: float = 1.0) -> Latents:
        """``Latents(z, one_hot_classes)``: ``z`` truncated normal in [-2, 2] times ``truncation``
        (the original's ``truncated_noise_sample``, drawn with a JAX key); ``classes`` ImageNet
        class indices or names (one, or one per sample), random classes when ``None``."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ConfigError(f"n={n!r} is not a positive number of samples")
        n = int(n)
        t = check_truncation(truncation)
        idx = None if classes is None else jnp.asarray(class_indices(classes, n, self.num_classes))
        return _draw(key, n, self.z_dim, self.num_classes, np.float32(t), idx)


@partial(jax.jit, static_argnums=(1, 2, 3))
def _draw(key, n, z_dim, num_classes, truncation, idx):
    kz, kc = jax.random.split(key)
    z = truncation * jax.random.truncated_normal(kz, -2.0, 2.0, (n, z_dim), jnp.float32)
    if idx is None:
        idx = jax.random.randint(kc, (n,), 0, num_classes)
    return Latents(z, jax.nn.one_hot(idx, num_classes, dtype=jnp.float32))
