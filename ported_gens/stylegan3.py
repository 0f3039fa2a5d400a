"""StyleGAN3 (NVlabs "Alias-Free Generative Adversarial Networks", configs T and R) in Flax NNX.

Architecture (NHWC throughout)::

    w    = mapping(z)                                  # normalise z, 2 FC layers (lrelu, lr 0.01)
    ws   = [w] * num_ws, truncated towards w_avg       # num_ws = num_layers + 2 = 16
    x    = input(ws[0])                                # Fourier features [N, 36, 36, C0]
    x    = L0(x, ws[1]) ... L13(x, ws[14])             # modulated conv + filtered leaky ReLU
    img  = L14(x, ws[15]) * output_scale               # ToRGB (1x1, no demodulation), 0.25

The synthesis input samples ``sin(2 pi (f . p + phase))`` on a grid for ``C0`` stored
frequencies ``f`` and phases, after a per-sample rotation/translation predicted from ``ws[0]``
(and the stored user ``transform``), then mixes the channels with a learned matrix.

A synthesis layer ``L{i}_{size}_{channels}`` (NVlabs' names) modulates its weight with
``styles = affine(w)`` (demodulated, except ToRGB), scales its input by the stored
``magnitude_ema ** -1/2``, convolves with full padding (``conv_kernel - 1``), then runs the
filtered leaky ReLU: bias, upsampling by zero insertion + padding + the stored low-pass
``up_filter`` (gain ``up**2``), leaky ReLU (slope 0.2, gain sqrt 2, clamp ``conv_clamp``), the
stored ``down_filter`` (separable Kaiser taps, or a 2-D jinc filter for R's non-critical layers)
and decimation. Every layer keeps a margin of 10 pixels beyond the image (sizes 36, 52, 84, 148,
276, 532 for the real models) until the last two, which are cropped to the image size.

Layer indices are the original PandA code's: ``Z`` at layer ``l`` is the output of ``L{l-1}``
(its margin included) and at ``l = 0`` the Fourier input; ``l = 0 .. num_layers`` (0..14).
Resuming at ``l`` runs ``L{l}`` .. ToRGB with the same ``ws`` (carried in ``ctx``), then
multiplies by ``output_scale``.

The filters, frequencies, phases and input transform are read from the checkpoint, not
redesigned. PandA sets the input transform to the identity before sampling; the stored buffer
is the identity in the official pickles and the test checkpoints, so it is used as stored.

W space (see :class:`~ported_gens.base.StyleGenerator`): ``G.mapping(z)``, ``G.w_avg`` (kept in
the mapping network, as NVlabs does), ``G.wp`` (also ``G.ws``; truncation moves every row, as
NVlabs' default ``truncation_cutoff=None``), ``G.features_from_wp``, ``G.generate_from_wp``.
Row 0 of w+ drives the Fourier input's affine and row ``i + 1`` the affine of ``L{i}``; both are
what ``first_projection_weights`` returns for those rows.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from panda_jax.errors import ConfigError, FeatureError

from . import ops
from .base import Buffer, StyleGenerator, register_family, stage
from .config import MAX_DEPTH, FamilyConfig, Flag, Float, Int, setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class StyleGAN3Config(FamilyConfig):
    """NVlabs' ``Generator`` / ``SynthesisNetwork`` / ``SynthesisLayer`` constructor arguments
    (training/networks_stylegan3.py), the mapping network's as ``mapping_layers`` /
    ``mapping_lr_multiplier``. The defaults are the official T config at 1024 px; :meth:`t` and
    :meth:`r` are the official T and R configs at a resolution."""

    family: ClassVar[str] = "stylegan3"
    z_dim: int = setting(Int(), 512)
    w_dim: int = setting(Int(), 512)
    img_resolution: int = setting(Int(hi=1 << 16), 1024)
    img_channels: int = setting(Int(), 3)
    mapping_layers: int = setting(Int(hi=MAX_DEPTH), 2)
    mapping_lr_multiplier: float = setting(Float(positive=True), 0.01)
    channel_base: int = setting(Int(), 32768)
    channel_max: int = setting(Int(), 512)
    num_layers: int = setting(Int(hi=MAX_DEPTH), 14)
    num_critical: int = setting(Int(lo=0, hi=MAX_DEPTH), 2)
    first_cutoff: float = setting(Float(positive=True), 2.0)
    first_stopband: float = setting(Float(positive=True), 2**2.1)
    last_stopband_rel: float = setting(Float(positive=True), 2**0.3)
    margin_size: int = setting(Int(lo=0, hi=1 << 12), 10)
    output_scale: float = setting(Float(), 0.25)
    conv_kernel: int = setting(Int(hi=64), 3)
    filter_size: int = setting(Int(hi=64), 6)
    lrelu_upsampling: int = setting(Int(hi=16), 2)
    use_radial_filters: bool = setting(Flag(), False)
    conv_clamp: float | None = setting(Float(positive=True, optional=True), 256.0)

    @classmethod
    def t(cls, resolution: int = 1024, **changes) -> "StyleGAN3Config":
        """The official StyleGAN3-T config (3x3 convolutions); the 256 px models halve
        ``channel_base`` (trained with ``--cbase=16384``)."""
        base = 16384 if resolution == 256 else 32768
        return cls.from_dict(dict(img_resolution=resolution, channel_base=base), **changes)

    @classmethod
    def r(cls, resolution: int = 1024, **changes) -> "StyleGAN3Config":
        """The official StyleGAN3-R config: 1x1 convolutions, radial filters, channel base and max doubled."""
        base = 32768 if resolution == 256 else 65536
        return cls.from_dict(
            dict(img_resolution=resolution, channel_base=base, channel_max=1024, conv_kernel=1, use_radial_filters=True),
            **changes,
        )

    @property
    def num_ws(self) -> int:
        """Rows of w+: the input, ``num_layers`` synthesis layers and the ToRGB."""
        return self.num_layers + 2

    def check(self):
        if self.num_critical >= self.num_layers:
            self.fail(f"num_critical {self.num_critical} must be below num_layers {self.num_layers}")
        plan = synthesis_plan(self)  # raises on sampling rates that are not integer ratios
        for spec in plan["layers"]:
            if spec["out_channels"] < 1 or spec["out_size"] < 1:
                self.fail(
                    f"layer {spec['name']} would have {spec['out_channels']} channels and {spec['out_size']} px; "
                    f"raise channel_base ({self.channel_base}) or img_resolution ({self.img_resolution})"
                )


# Constructor defaults: NVlabs' training/networks_stylegan3.py with the official T config.
DEFAULTS = StyleGAN3Config.defaults()


def synthesis_plan(cfg: dict | StyleGAN3Config) -> dict:
    """The synthesis network's layout, computed as NVlabs' ``SynthesisNetwork`` /
    ``SynthesisLayer`` constructors do (float64 numpy): the input's size, channels, sampling rate
    and bandwidth, and per layer its name, channels, sizes, up/down factors, filter taps and
    padding. ``cfg``: a config, or a dict of settings over :data:`DEFAULTS` (not checked)."""
    c = cfg.to_dict() if isinstance(cfg, StyleGAN3Config) else dict(DEFAULTS, **cfg)
    res, n = c["img_resolution"], c["num_layers"]
    last_cutoff = res / 2
    last_stopband = last_cutoff * c["last_stopband_rel"]
    exponents = np.minimum(np.arange(n + 1) / (n - c["num_critical"]), 1)
    cutoffs = c["first_cutoff"] * (last_cutoff / c["first_cutoff"]) ** exponents
    stopbands = c["first_stopband"] * (last_stopband / c["first_stopband"]) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    sizes = rates + c["margin_size"] * 2
    sizes[-2:] = res
    channels = np.rint(np.minimum((c["channel_base"] / 2) / cutoffs, c["channel_max"]))
    channels[-1] = c["img_channels"]

    layers = []
    for idx in range(n + 1):
        prev = max(idx - 1, 0)
        torgb = idx == n
        critical = idx >= n - c["num_critical"]
        in_rate, out_rate = int(rates[prev]), int(rates[idx])
        tmp_rate = max(in_rate, out_rate) * (1 if torgb else c["lrelu_upsampling"])
        kernel = 1 if torgb else c["conv_kernel"]
        up = int(np.rint(tmp_rate / in_rate))
        down = int(np.rint(tmp_rate / out_rate))
        if in_rate * up != tmp_rate or out_rate * down != tmp_rate:
            raise ConfigError(f"stylegan3: layer {idx}: sampling rates {in_rate}/{out_rate} are not integer ratios")
        up_taps = c["filter_size"] * up if up > 1 and not torgb else 1
        down_taps = c["filter_size"] * down if down > 1 and not torgb else 1
        in_size, out_size = int(sizes[prev]), int(sizes[idx])
        pad_total = (out_size - 1) * down + 1 - (in_size + kernel - 1) * up + up_taps + down_taps - 2
        pad_lo = (pad_total + up) // 2
        out_ch = int(channels[idx])
        layers.append(
            dict(
                name=f"L{idx}_{out_size}_{out_ch}",
                is_torgb=torgb,
                in_channels=int(channels[prev]),
                out_channels=out_ch,
                in_size=in_size,
                out_size=out_size,
                conv_kernel=kernel,
                up=up,
                down=down,
                up_taps=up_taps,
                down_taps=down_taps,
                down_radial=bool(c["use_radial_filters"]) and not critical,
                padding=(pad_lo, pad_total - pad_lo),
            )
        )
    return dict(
        input=dict(channels=int(channels[0]), size=int(sizes[0]), sampling_rate=float(rates[0]), bandwidth=float(cutoffs[0])),
        layers=layers,
    )


# ---- ops --------------------------------------------------------------------------------


def _lerp(start, end, weight: float):
    """``torch.lerp`` with a scalar weight, with its two formulas (they round differently)."""
    w = np.float32(weight)
    if w < 0.5:
        return start + w * (end - start)
    return end - (end - start) * (np.float32(1) - w)


def _take(x, axis: int, start: int, stop: int, step: int = 1):
    """``x[..., start:stop:step, ...]`` along ``axis`` (static bounds)."""
    return jax.lax.slice_in_dim(x, start, stop, step, axis)


def _pad_axis(x, axis: int, lo: int, hi: int):
    """Zero-pad (positive) or crop (negative) ``x`` along ``axis``."""
    cfg = [(0, 0, 0)] * x.ndim
    cfg[axis] = (lo, hi, 0)
    return jax.lax.pad(x, jnp.zeros((), x.dtype), cfg)


def _fir_axis(x, g, axis: int, up: int, pad0: int, pad1: int, down: int):
    """Along ``axis``: insert ``up - 1`` zeros after every sample, pad ``(pad0, pad1)`` (negative
    crops), correlate with the taps ``g`` (traced, static length), keep every ``down``-th output.

    Written as sums of shifted slices (XLA fuses them into one loop; a grouped convolution is
    far slower on CPUs). Upsampling is polyphase: output phase ``r`` only sums the taps that meet
    non-inserted samples, so no multiplication by an inserted zero is done. Decimation slices
    with a stride, so only the kept outputs are computed.
    """
    k, n = g.shape[0], x.shape[axis]
    m = n * up + pad0 + pad1 - k + 1  # outputs at the upsampled rate
    if m <= 0:
        raise ValueError(f"upfirdn2d: {n} samples with up={up}, padding ({pad0}, {pad1}) are fewer than {k} taps")
    if up == 1:
        x = _pad_axis(x, axis, pad0, pad1)
        q = (m - 1) // down + 1
        return sum(g[t] * _take(x, axis, t, t + down * (q - 1) + 1, down) for t in range(k))
    mr = -(-m // up)  # outputs per phase
    taps = [[(t, (r + t - pad0) // up) for t in range(k) if (r + t - pad0) % up == 0] for r in range(up)]
    offsets = [e for phase in taps for _, e in phase]
    left = max(0, -min(offsets))
    right = max(0, max(offsets) + mr - n)
    xp = _pad_axis(x, axis, left, right)
    phases = []
    for phase in taps:
        terms = [g[t] * _take(xp, axis, e + left, e + left + mr) for t, e in phase]
        phases.append(sum(terms) if terms else jnp.zeros_like(_take(xp, axis, 0, mr)))
    y = jnp.stack(phases, axis=axis + 1)
    shape = list(x.shape)
    shape[axis] = mr * up
    y = _take(y.reshape(shape), axis, 0, m)
    return _take(y, axis, 0, m, down) if down > 1 else y


def _fir_2d(x, g, down: int):
    """Valid correlation of H and W with the 2-D taps ``g [kh, kw]``, keeping every ``down``-th output."""
    kh, kw = g.shape
    qh = (x.shape[1] - kh) // down + 1
    qw = (x.shape[2] - kw) // down + 1
    y = None
    for a in range(kh):
        rows = _take(x, 1, a, a + down * (qh - 1) + 1, down)
        for b in range(kw):
            term = g[a, b] * _take(rows, 2, b, b + down * (qw - 1) + 1, down)
            y = term if y is None else y + term
    return y


def upfirdn2d(x, f, up: int = 1, down: int = 1, padding=(0, 0, 0, 0), gain: float = 1.0):
    """NVlabs' ``upfirdn2d`` on NHWC ``x`` with a traced filter ``f``.

    Upsample by inserting ``up - 1`` zeros after every pixel, pad ``padding = (x0, x1, y0, y1)``
    (negative crops), convolve with ``f`` (``[taps]``: separable, along W then H; ``[kh, kw]``:
    2-D; ``None``: identity) times ``gain`` (spread as ``gain ** (ndim / 2)`` over the filter's
    dimensions), keep every ``down``-th pixel.
    """
    px0, px1, py0, py1 = padding
    if f is None:
        f = jnp.ones((1,), x.dtype)
    f = jnp.flip(f.astype(x.dtype) * (gain ** (f.ndim / 2)))  # a true convolution, as NVlabs'
    if f.ndim == 1:
        x = _fir_axis(x, f, 2, up, px0, px1, down)
        return _fir_axis(x, f, 1, up, py0, py1, down)
    pads = ((0, 0, 0), (py0, py1 + up - 1, up - 1), (px0, px1 + up - 1, up - 1), (0, 0, 0))
    x = jax.lax.pad(x, jnp.zeros((), x.dtype), pads)  # zero insertion, then pad or crop
    return _fir_2d(x, f, down)


def filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp):
    """NVlabs' ``filtered_lrelu`` (reference path): bias, upsample with ``fu``, leaky ReLU times
    ``gain`` clamped to ``+-clamp``, downsample with ``fd``."""
    x = x + ops.row(b)
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=up * up)
    if slope != 1:
        x = jnp.where(x > 0, x, x * slope)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = jnp.clip(x, -clamp, clamp)
    return upfirdn2d(x, fd, down=down)


def modulated_conv2d(x, weight, styles, *, demodulate: bool, padding: int, input_gain):
    """NVlabs' StyleGAN3 ``modulated_conv2d`` as ``conv(x * s * g, W') * d``: one weight for the
    batch instead of per-sample weights (equal up to float rounding). ``x [N,H,W,I]``,
    ``weight [k,k,I,O]``, ``styles [N,I]``, ``input_gain`` a scalar."""
    if demodulate:
        weight = weight * jax.lax.rsqrt(jnp.mean(jnp.square(weight), axis=(0, 1, 2), keepdims=True))
        styles = styles * jax.lax.rsqrt(jnp.mean(jnp.square(styles)))  # over the whole batch, as NVlabs
        dcoefs = jax.lax.rsqrt(jnp.square(styles) @ jnp.sum(jnp.square(weight), axis=(0, 1)) + 1e-8)  # [N, O]
    x = x * ops.per_sample(styles * input_gain)
    y = ops.conv2d(x, weight, padding)
    if demodulate:
        y = y * ops.per_sample(dcoefs)
    return y


# ---- modules ----------------------------------------------------------------------------


class Dense(nnx.Module):
    """NVlabs ``FullyConnectedLayer``: ``x @ (kernel * lr / sqrt(in)) + bias * lr``, then the
    activation (``"lrelu"``: leaky ReLU 0.2 times sqrt 2). ``kernel`` is ``[in, out]``."""

    def __init__(self, in_features: int, out_features: int, *, lr_multiplier: float = 1.0, activation: str = "linear"):
        self.kernel = nnx.Param(ops.zeros(in_features, out_features))
        self.bias = nnx.Param(ops.zeros(out_features))
        self.weight_gain = float(lr_multiplier / np.sqrt(in_features))
        self.bias_gain = float(lr_multiplier)
        self.activation = activation

    def __call__(self, x):
        w = self.kernel[...] * self.weight_gain
        b = self.bias[...]
        if self.bias_gain != 1:
            b = b * self.bias_gain
        x = x @ w + b[None, :]
        if self.activation == "lrelu":
            x = ops.lrelu(x) * ops.SQRT2
        return x


class Mapping(nnx.Module):
    """NVlabs ``MappingNetwork`` (unconditional): ``w = fc(normalize_2nd_moment(z))``; holds ``w_avg``."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_multiplier: float):
        dims = [z_dim] + [w_dim] * num_layers
        self.fc = nnx.List(
            [Dense(a, b, lr_multiplier=lr_multiplier, activation="lrelu") for a, b in zip(dims[:-1], dims[1:])]
        )
        self.w_avg = Buffer(ops.zeros(w_dim))

    def __call__(self, z):
        x = ops.normalize_2nd_moment(ops.as_float(z))
        for fc in self.fc:
            x = fc(x)
        return x


class FourierInput(nnx.Module):
    """NVlabs ``SynthesisInput``: Fourier features on a ``size x size`` grid."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        self.kernel = nnx.Param(ops.zeros(channels, channels))  # [in, out]
        self.affine = Dense(w_dim, 4)
        self.transform = Buffer(jnp.eye(3, dtype=jnp.float32))
        self.freqs = Buffer(ops.zeros(channels, 2))
        self.phases = Buffer(ops.zeros(channels))
        self.channels, self.size = channels, size
        self.sampling_rate, self.bandwidth = float(sampling_rate), float(bandwidth)

    def grid(self) -> np.ndarray:
        """Sample positions ``[size]`` along each axis (``affine_grid``, ``align_corners=False``)."""
        j = np.arange(self.size, dtype=np.float64)
        return (0.5 * self.size / self.sampling_rate * ((2 * j + 1) / self.size - 1)).astype(np.float32)

    def __call__(self, w):
        n = w.shape[0]
        t = self.affine(w)  # (r_c, r_s, t_x, t_y)
        t = t / jnp.sqrt(jnp.sum(jnp.square(t[:, :2]), axis=1, keepdims=True))
        c, s, tx, ty = t[:, 0], t[:, 1], t[:, 2], t[:, 3]
        zeros, ones = jnp.zeros_like(c), jnp.ones_like(c)
        m_r = jnp.stack([jnp.stack([c, -s, zeros], 1), jnp.stack([s, c, zeros], 1), jnp.stack([zeros, zeros, ones], 1)], 1)
        m_t = jnp.stack([jnp.stack([ones, zeros, -tx], 1), jnp.stack([zeros, ones, -ty], 1), jnp.stack([zeros, zeros, ones], 1)], 1)
        user = jnp.broadcast_to(self.transform[...][None], (n, 3, 3))
        transforms = m_r @ m_t @ user  # [N, 3, 3]

        freqs = jnp.broadcast_to(self.freqs[...][None], (n, self.channels, 2))
        phases = self.phases[...][None, :] + (freqs @ transforms[:, :2, 2:])[:, :, 0]  # [N, C]
        freqs = freqs @ transforms[:, :2, :2]  # [N, C, 2]
        norm = jnp.sqrt(jnp.sum(jnp.square(freqs), axis=2))
        amplitudes = jnp.clip(1 - (norm - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth), 0, 1)

        g = jnp.asarray(self.grid())
        gx = g[None, None, :, None] * freqs[:, None, None, :, 0]  # [N, 1, W, C]
        gy = g[None, :, None, None] * freqs[:, None, None, :, 1]  # [N, H, 1, C]
        x = (gx + gy) + ops.per_sample(phases)
        x = jnp.sin(x * (np.pi * 2)) * ops.per_sample(amplitudes)
        return x @ (self.kernel[...] / np.sqrt(self.channels))


class SynthesisLayer(nnx.Module):
    """NVlabs ``SynthesisLayer`` (and the final ToRGB), from one entry of :func:`synthesis_plan`."""

    def __init__(self, spec: dict, w_dim: int, conv_clamp):
        k, cin, cout = spec["conv_kernel"], spec["in_channels"], spec["out_channels"]
        self.affine = Dense(w_dim, cin)
        self.weight = nnx.Param(ops.zeros(k, k, cin, cout))
        self.bias = nnx.Param(ops.zeros(cout))
        self.magnitude_ema = Buffer(jnp.ones((), jnp.float32))
        self.up_filter = Buffer(ops.zeros(spec["up_taps"])) if spec["up_taps"] > 1 else None
        if spec["down_taps"] > 1:
            shape = (spec["down_taps"],) * (2 if spec["down_radial"] else 1)
            self.down_filter = Buffer(ops.zeros(*shape))
        else:
            self.down_filter = None
        # No name or index here: layers with equal settings and shapes share one compiled program.
        self.is_torgb = bool(spec["is_torgb"])
        self.conv_kernel, self.in_channels = k, cin
        self.up, self.down = spec["up"], spec["down"]
        self.padding = tuple(spec["padding"]) * 2  # (x0, x1, y0, y1): square
        self.gain = 1.0 if self.is_torgb else ops.SQRT2
        self.slope = 1.0 if self.is_torgb else 0.2
        self.clamp = None if conv_clamp is None else float(conv_clamp)

    def __call__(self, x, w):
        input_gain = jax.lax.rsqrt(self.magnitude_ema[...])
        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * float(1 / np.sqrt(self.in_channels * self.conv_kernel**2))
        x = modulated_conv2d(
            x, self.weight[...], styles, demodulate=not self.is_torgb, padding=self.conv_kernel - 1, input_gain=input_gain
        )
        fu = None if self.up_filter is None else self.up_filter[...]
        fd = None if self.down_filter is None else self.down_filter[...]
        return filtered_lrelu(x, fu, fd, self.bias[...], self.up, self.down, self.padding, self.gain, self.slope, self.clamp)


@register_family("stylegan3")
class StyleGAN3(StyleGenerator):
    """StyleGAN3-T / -R generator (see :class:`StyleGAN3Config`)."""

    Config = StyleGAN3Config

    def __init__(self, config: StyleGAN3Config | dict | None = None, /, **settings):
        super().__init__(config, **settings)
        cfg = self.cfg
        plan = synthesis_plan(cfg)
        self.mapping = Mapping(cfg.z_dim, cfg.w_dim, cfg.mapping_layers, cfg.mapping_lr_multiplier)
        inp = plan["input"]
        self.input = FourierInput(cfg.w_dim, inp["channels"], inp["size"], inp["sampling_rate"], inp["bandwidth"])
        self.synthesis = nnx.List([SynthesisLayer(s, cfg.w_dim, cfg.conv_clamp) for s in plan["layers"]])
        shapes = {0: (inp["size"], inp["size"], inp["channels"])}
        for i, s in enumerate(plan["layers"][:-1]):
            shapes[i + 1] = (s["out_size"], s["out_size"], s["out_channels"])
        self._shapes = tuple(sorted(shapes.items()))
        self.layer_names = tuple(s["name"] for s in plan["layers"])

    @property
    def num_layers(self) -> int:
        return self.cfg.num_layers

    @property
    def output_scale(self) -> float:
        return self.cfg.output_scale

    @property
    def w_avg(self):
        """The average w ``[w_dim]`` (NVlabs keeps it in the mapping network)."""
        return self.mapping.w_avg

    def _layer_shapes(self):
        return dict(self._shapes)

    def _truncate(self, wp, psi: float):
        """NVlabs' truncation: every row ``lerp(w_avg, w, psi)`` (``truncation_cutoff=None``)."""
        return wp if psi == 1 else _lerp(self.w_avg[...][None, None, :], wp, psi)

    def _style_weight(self, row: int):
        """Row 0 drives the Fourier input's affine (rotation and translation, 4 outputs), row
        ``i + 1`` the affine of ``L{i}`` (the last: ToRGB); NVlabs' ``affine.weight`` ``[out, w_dim]``."""
        dense = self.input.affine if row == 0 else self.synthesis[row - 1].affine
        return dense.kernel[...].T

    def ws(self, lat, truncation: float = 1.0):
        """The per-layer latents ``[N, num_ws, w_dim]`` (truncated towards ``w_avg``): :meth:`wp`."""
        return self.wp(lat, truncation)

    def _input(self, wp):
        return self.input(wp[:, 0])

    def _features_from_wp(self, wp, layer: int):
        x = self._input(wp)
        for idx in range(layer):
            x = self.synthesis[idx](x, wp[:, idx + 1])
        return x, {"ws": wp}

    def _render(self, Z, layer: int, ctx: dict):
        ws = ctx["ws"]
        x = Z
        for idx in range(layer, self.num_layers + 1):
            x = self.synthesis[idx](x, ws[:, idx + 1])
        return x * self.output_scale if self.output_scale != 1 else x

    # ---- staged execution ---------------------------------------------------------------
    # The public methods run the synthesis one compiled layer at a time (each layer is
    # compiled once and reused by every start and stop layer), instead of compiling a whole
    # program per (layer, method): the layers have distinct shapes, so compile time would grow
    # with the square of the depth when many layers are visited. The pure ``_features`` /
    # ``_render`` / ``_generate`` above compute the same numbers inside a caller's ``jit``.

    def _run(self, x, ws, start: int, stop: int):
        for idx in range(start, stop):
            x = stage(self.synthesis[idx], x, ws[:, idx + 1])
        if stop == self.num_layers + 1 and self.output_scale != 1:
            x = x * self.output_scale
        return x

    def features_from_wp(self, wp, layer: int):
        """``(Z, ctx)`` at ``layer`` from w+ ``[N, num_ws, w_dim]``; ``ctx = {"ws": wp}``."""
        wp = self.check_wp(wp)
        layer = self.check_layer(layer)
        x = self._jit("_input", (), wp=wp)
        return self._run(x, wp, 0, layer), {"ws": wp}

    def generate_from_wp(self, wp):
        """The image ``[N, H, W, 3]`` from w+ (times ``output_scale``)."""
        Z, ctx = self.features_from_wp(wp, 0)
        return self._run(Z, ctx["ws"], 0, self.num_layers + 1)

    def features(self, lat, layer: int, truncation: float = 1.0):
        """``(Z, ctx)``: the feature map ``[N, H, W, C]`` at ``layer`` and ``ctx = {"ws": ...}``."""
        layer = self.check_layer(layer)
        return self.features_from_wp(self.wp(lat, truncation), layer)

    def render(self, Z, layer: int, ctx: dict):
        """The image ``[N, H, W, 3]`` from resuming at ``layer`` with ``Z`` (margins included)."""
        layer = self.check_layer(layer)
        Z = self.check_features(Z, layer, ', margins included')
        if "ws" not in ctx:
            raise FeatureError("ctx has no 'ws'; pass the ctx that features() returned with Z")
        return self._run(Z, jnp.asarray(ctx["ws"]), layer, self.num_layers + 1)

    def generate(self, lat, truncation: float = 1.0):
        """The image ``[N, H, W, 3]`` of the whole forward (times ``output_scale``)."""
        return self.generate_from_wp(self.wp(lat, truncation))
