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
"""

from __future__ import annotations

import math
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from panda_jax.errors import ConfigError, FeatureError

from .base import Buffer, Generator, as_latents, register_family

SQRT2 = math.sqrt(2.0)
_DN = ("NHWC", "HWIO", "NHWC")

# Constructor defaults: NVlabs' training/networks_stylegan3.py with the official T config.
DEFAULTS = dict(
    z_dim=512,
    w_dim=512,
    img_resolution=1024,
    img_channels=3,
    mapping_layers=2,
    mapping_lr_multiplier=0.01,
    channel_base=32768,
    channel_max=512,
    num_layers=14,
    num_critical=2,
    first_cutoff=2.0,
    first_stopband=2**2.1,
    last_stopband_rel=2**0.3,
    margin_size=10,
    output_scale=0.25,
    conv_kernel=3,
    filter_size=6,
    lrelu_upsampling=2,
    use_radial_filters=False,
    conv_clamp=256.0,
)


def synthesis_plan(cfg: dict) -> dict:
    """The synthesis network's layout, computed as NVlabs' ``SynthesisNetwork`` /
    ``SynthesisLayer`` constructors do (float64 numpy): the input's size, channels, sampling rate
    and bandwidth, and per layer its name, channels, sizes, up/down factors, filter taps and
    padding."""
    c = dict(DEFAULTS, **cfg)
    res, n = c["img_resolution"], c["num_layers"]
    last_cutoff = res / 2
    last_stopband = last_cutoff * c["last_stopband_rel"]
    exponents = np.minimum(np.arange(n + 1) / (n - c["num_critical"]), 1)
    cutoffs = c["first_cutoff"] * (last_cutoff / c["first_cutoff"]) ** exponents
    stopbands = c["first_stopband"] * (last_stopband / c["first_stopband"]) ** exponents
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
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
            raise ConfigError(f"StyleGAN3 layer {idx}: sampling rates {in_rate}/{out_rate} are not integer ratios")
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


def _row(v):
    """``[C]`` -> ``[1, 1, 1, C]`` (broadcasts are explicit: implicit rank promotion is an error)."""
    return v.reshape(1, 1, 1, -1)


def _per_sample(v):
    """``[N, C]`` -> ``[N, 1, 1, C]``."""
    return v[:, None, None, :]


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
    x = x + _row(b)
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
    x = x * _per_sample(styles * input_gain)
    y = jax.lax.conv_general_dilated(x, weight, (1, 1), ((padding, padding), (padding, padding)), dimension_numbers=_DN)
    if demodulate:
        y = y * _per_sample(dcoefs)
    return y


# ---- modules ----------------------------------------------------------------------------


class Dense(nnx.Module):
    """NVlabs ``FullyConnectedLayer``: ``x @ (kernel * lr / sqrt(in)) + bias * lr``, then the
    activation (``"lrelu"``: leaky ReLU 0.2 times sqrt 2). ``kernel`` is ``[in, out]``."""

    def __init__(self, in_features: int, out_features: int, *, lr_multiplier: float = 1.0, activation: str = "linear"):
        self.kernel = nnx.Param(jnp.zeros((in_features, out_features), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((out_features,), jnp.float32))
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
            x = jnp.where(x > 0, x, x * 0.2) * SQRT2
        return x


class Mapping(nnx.Module):
    def __init__(self, z_dim: int, w_dim: int, num_layers: int, lr_multiplier: float):
        dims = [z_dim] + [w_dim] * num_layers
        self.fc = nnx.List(
            [Dense(a, b, lr_multiplier=lr_multiplier, activation="lrelu") for a, b in zip(dims[:-1], dims[1:])]
        )
        self.w_avg = Buffer(jnp.zeros((w_dim,), jnp.float32))

    def __call__(self, z, num_ws: int, truncation: float):
        x = z.astype(jnp.float32)
        x = x * jax.lax.rsqrt(jnp.mean(jnp.square(x), axis=1, keepdims=True) + 1e-8)
        for fc in self.fc:
            x = fc(x)
        ws = jnp.broadcast_to(x[:, None, :], (x.shape[0], num_ws, x.shape[1]))
        if truncation != 1:
            ws = _lerp(self.w_avg[...][None, None, :], ws, truncation)
        return ws


class FourierInput(nnx.Module):
    """NVlabs ``SynthesisInput``: Fourier features on a ``size x size`` grid."""

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        self.kernel = nnx.Param(jnp.zeros((channels, channels), jnp.float32))  # [in, out]
        self.affine = Dense(w_dim, 4)
        self.transform = Buffer(jnp.eye(3, dtype=jnp.float32))
        self.freqs = Buffer(jnp.zeros((channels, 2), jnp.float32))
        self.phases = Buffer(jnp.zeros((channels,), jnp.float32))
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
        x = (gx + gy) + _per_sample(phases)
        x = jnp.sin(x * (np.pi * 2)) * _per_sample(amplitudes)
        return x @ (self.kernel[...] / np.sqrt(self.channels))


class SynthesisLayer(nnx.Module):
    """NVlabs ``SynthesisLayer`` (and the final ToRGB), from one entry of :func:`synthesis_plan`."""

    def __init__(self, spec: dict, w_dim: int, conv_clamp):
        k, cin, cout = spec["conv_kernel"], spec["in_channels"], spec["out_channels"]
        self.affine = Dense(w_dim, cin)
        self.weight = nnx.Param(jnp.zeros((k, k, cin, cout), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((cout,), jnp.float32))
        self.magnitude_ema = Buffer(jnp.ones((), jnp.float32))
        self.up_filter = Buffer(jnp.zeros((spec["up_taps"],), jnp.float32)) if spec["up_taps"] > 1 else None
        if spec["down_taps"] > 1:
            shape = (spec["down_taps"],) * (2 if spec["down_radial"] else 1)
            self.down_filter = Buffer(jnp.zeros(shape, jnp.float32))
        else:
            self.down_filter = None
        # No name or index here: layers with equal settings and shapes share one compiled program.
        self.is_torgb = bool(spec["is_torgb"])
        self.conv_kernel, self.in_channels = k, cin
        self.up, self.down = spec["up"], spec["down"]
        self.padding = tuple(spec["padding"]) * 2  # (x0, x1, y0, y1): square
        self.gain = 1.0 if self.is_torgb else SQRT2
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
class StyleGAN3(Generator):
    """StyleGAN3-T / -R generator; constructor arguments as NVlabs' (see :data:`DEFAULTS`), the
    mapping network's as ``mapping_layers`` / ``mapping_lr_multiplier``."""

    def __init__(self, **config):
        unknown = sorted(set(config) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"unknown StyleGAN3 settings {unknown}; known: {sorted(DEFAULTS)}")
        cfg = dict(DEFAULTS, **config)
        cfg["conv_clamp"] = None if cfg["conv_clamp"] is None else float(cfg["conv_clamp"])
        super().__init__(cfg)
        plan = synthesis_plan(cfg)
        self.num_layers = int(cfg["num_layers"])
        self.num_ws = self.num_layers + 2
        self._z_dim = int(cfg["z_dim"])
        self.output_scale = float(cfg["output_scale"])
        self.mapping = Mapping(cfg["z_dim"], cfg["w_dim"], cfg["mapping_layers"], cfg["mapping_lr_multiplier"])
        inp = plan["input"]
        self.input = FourierInput(cfg["w_dim"], inp["channels"], inp["size"], inp["sampling_rate"], inp["bandwidth"])
        self.synthesis = nnx.List([SynthesisLayer(s, cfg["w_dim"], cfg["conv_clamp"]) for s in plan["layers"]])
        shapes = {0: (inp["size"], inp["size"], inp["channels"])}
        for i, s in enumerate(plan["layers"][:-1]):
            shapes[i + 1] = (s["out_size"], s["out_size"], s["out_channels"])
        self._shapes = tuple(sorted(shapes.items()))
        self.layer_names = tuple(s["name"] for s in plan["layers"])

    @property
    def z_dim(self) -> int:
        return self._z_dim

    def _layer_shapes(self):
        return dict(self._shapes)

    def _ws(self, lat, truncation: float):
        return self.mapping(as_latents(lat).z, self.num_ws, truncation)

    def ws(self, lat, truncation: float = 1.0):
        """The per-layer latents ``[N, num_ws, w_dim]`` (truncated towards ``w_avg``)."""
        return self._jit("_ws", (("truncation", float(truncation)),), lat=as_latents(lat))

    def _features(self, lat, layer: int, truncation: float):
        ws = self._ws(lat, truncation)
        x = self.input(ws[:, 0])
        for idx in range(layer):
            x = self.synthesis[idx](x, ws[:, idx + 1])
        return x, {"ws": ws}

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
            scale = self.output_scale if idx == self.num_layers else 1.0
            graphdef, state = nnx.split(self.synthesis[idx])
            x = _apply_layer(graphdef, state, x, ws[:, idx + 1], scale)
        return x

    def features(self, lat, layer: int, truncation: float = 1.0):
        """``(Z, ctx)``: the feature map ``[N, H, W, C]`` at ``layer`` and ``ctx = {"ws": ...}``."""
        layer = self.check_layer(layer)
        x, ctx = self._jit("_features", (("layer", 0), ("truncation", float(truncation))), lat=as_latents(lat))
        return self._run(x, ctx["ws"], 0, layer), ctx

    def render(self, Z, layer: int, ctx: dict):
        """The image ``[N, H, W, 3]`` from resuming at ``layer`` with ``Z`` (margins included)."""
        layer = self.check_layer(layer)
        Z = jnp.asarray(Z)
        want = self._layer_shapes()[layer]
        if Z.ndim != 4 or tuple(Z.shape[1:]) != want:
            raise FeatureError(
                f"Z of shape {tuple(Z.shape)} cannot resume this StyleGAN3 at layer {layer}; "
                f"expected [N, {want[0]}, {want[1]}, {want[2]}] (NHWC, margins included)"
            )
        if "ws" not in ctx:
            raise FeatureError("ctx has no 'ws'; pass the ctx that features() returned with Z")
        return self._run(Z, jnp.asarray(ctx["ws"]), layer, self.num_layers + 1)

    def generate(self, lat, truncation: float = 1.0):
        """The image ``[N, H, W, 3]`` of the whole forward (times ``output_scale``)."""
        Z, ctx = self.features(lat, 0, truncation)
        return self._run(Z, ctx["ws"], 0, self.num_layers + 1)


@partial(jax.jit, static_argnames=("graphdef", "scale"))
def _apply_layer(graphdef, state, x, w, scale: float):
    y = nnx.merge(graphdef, state)(x, w)
    return y * scale if scale != 1 else y
