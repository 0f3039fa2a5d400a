"""Array operations and layers the ported generators share, pure ``jax.numpy`` (NHWC); the
equalised-learning-rate layers are the style-based and progressive generators'.

Weights are kept in JAX layouts: dense ``[in, out]``, convolution ``[kh, kw, in, out]`` (HWIO).
Equalised learning rate (Karras et al.): a layer stores its unscaled weight and multiplies it by
``gain / sqrt(fan_in) * lr_mul`` at every call; its bias by ``lr_mul``.

Functions:

- :func:`row`, :func:`per_sample`: explicit broadcasts of ``[C]`` and ``[N, C]`` against NHWC
  (implicit rank promotion is an error in the tests); :func:`zeros`; :func:`as_float`; :data:`DN`
- :func:`lrelu`, :func:`pixel_norm`, :func:`instance_norm`, :func:`normalize_2nd_moment`
- :func:`conv2d` (stride 1, explicit padding), :func:`upsample_nearest`
- :func:`upfirdn2d`: zero-insertion upsampling, padding (negative crops), FIR filtering (a true
  convolution, as NVlabs' reference) and downsampling, as a sum of shifted slices (no depthwise
  convolution); :func:`setup_filter` builds the normalised 2-D kernel, :func:`blur` applies one.
- :func:`conv_transpose2d`: PyTorch's ``conv_transpose2d`` semantics. The default ``impl="phase"``
  splits the stride-2 transposed convolution into its four sub-pixel phases, each an ordinary
  convolution of the undilated input with its share of the kernel taps, interleaved afterwards;
  no multiplication by inserted zeros is done. ``impl="dilate"`` (XLA's lhs-dilated convolution)
  is kept for comparison; both agree to float rounding (``tests/test_genforce_ops.py``). On a
  2-core CPU (XLA, float32, batch 4, 32-128 px, 64-256 channels, 3x3 and 4x4 kernels) the phase
  form ran 1.3-1.8x faster than the dilated one.
- :func:`modulated_conv2d`: StyleGAN2 modulation/demodulation, written as
  ``conv(x * s, W) * d`` with one weight shared by the batch (exactly the fused per-sample-weight
  form up to float rounding), optionally with the x2 upsampling of StyleGAN2's ``Conv0_up``.
- :func:`truncate`: genforce's truncation of ``wp`` towards ``w_avg`` for the first layers.

Modules: :class:`EqualDense`, :class:`EqualConv`, :class:`MappingNetwork`,
:class:`ModulatedConv` (style affine + modulated conv + stored noise + bias + activation).
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from .base import Buffer

SQRT2 = math.sqrt(2.0)
LRELU_SLOPE = 0.2
DN = ("NHWC", "HWIO", "NHWC")  # convolution dimension numbers: NHWC activations, HWIO kernels


def zeros(*shape):
    """float32 zeros of ``shape`` (placeholder parameters; converters fill them)."""
    return jnp.zeros(shape, jnp.float32)


def as_float(x):
    """``x`` as a float array of at least single precision: float32, or float64 when it already
    is (under ``jax_enable_x64``, so a generator can run in double precision)."""
    x = jnp.asarray(x)
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def row(v):
    """``[C]`` -> ``[1, 1, 1, C]`` (broadcasts are explicit: implicit rank promotion is an error)."""
    return v.reshape(1, 1, 1, -1)


def per_sample(v):
    """``[N, C]`` -> ``[N, 1, 1, C]``."""
    return v[:, None, None, :]


# ---- elementwise and normalisation ------------------------------------------------------


def lrelu(x, slope: float = LRELU_SLOPE):
    """Leaky ReLU, ``x`` where ``x >= 0`` else ``slope * x``."""
    return jnp.where(x >= 0, x, x * slope)


def pixel_norm(x, eps: float = 1e-8, axis: int = -1):
    """``x / sqrt(mean(x^2 over axis) + eps)`` (PGGAN, genforce mapping input)."""
    return x / jnp.sqrt(jnp.mean(x * x, axis=axis, keepdims=True) + eps)


def normalize_2nd_moment(x, eps: float = 1e-8, axis: int = -1):
    """``x * rsqrt(mean(x^2) + eps)`` (NVlabs mapping input)."""
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=axis, keepdims=True) + eps)


def instance_norm(x, eps: float = 1e-8):
    """Per-sample, per-channel normalisation over H and W (StyleGAN): centre, then divide by
    ``sqrt(mean(x^2) + eps)``."""
    x = x - jnp.mean(x, axis=(1, 2), keepdims=True)
    return x / jnp.sqrt(jnp.mean(x * x, axis=(1, 2), keepdims=True) + eps)


# ---- convolution, resampling ------------------------------------------------------------


def conv2d(x, w, padding: int | Sequence[tuple[int, int]] = 0):
    """Stride-1 cross-correlation (PyTorch ``conv2d``): ``x [N,H,W,I]``, ``w [kh,kw,I,O]``."""
    if isinstance(padding, int):
        padding = ((padding, padding), (padding, padding))
    return jax.lax.conv_general_dilated(x, w, (1, 1), tuple(padding), dimension_numbers=DN)


def upsample_nearest(x, factor: int = 2):
    """Nearest-neighbour upsampling (``F.interpolate(mode='nearest')`` with an integer factor)."""
    n, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (n, h, factor, w, factor, c))
    return x.reshape(n, h * factor, w * factor, c)


def setup_filter(f, gain: float = 1.0, normalize: bool = True) -> np.ndarray:
    """A 2-D FIR kernel (float32 numpy) from taps: 1-D taps give their outer product; the kernel
    is normalised to sum 1 (if ``normalize``) and multiplied by ``gain``."""
    f = np.asarray(f, np.float64)
    if f.ndim == 1:
        f = np.outer(f, f)
    if normalize:
        f = f / f.sum()
    return (f * gain).astype(np.float32)


def _pad_hw(x, pad):
    """Pad (positive) or crop (negative) H and W: ``pad = (top, bottom, left, right)``."""
    t, b, l, r = pad
    x = jnp.pad(x, ((0, 0), (max(t, 0), max(b, 0)), (max(l, 0), max(r, 0)), (0, 0)))
    h, w = x.shape[1], x.shape[2]
    return x[:, max(-t, 0) : h - max(-b, 0), max(-l, 0) : w - max(-r, 0), :]


def zero_insert(x, up: int):
    """Upsample by inserting ``up - 1`` zeros after every pixel (in H and W)."""
    if up == 1:
        return x
    n, h, w, c = x.shape
    x = jnp.pad(x[:, :, None, :, None, :], ((0, 0), (0, 0), (0, up - 1), (0, 0), (0, up - 1), (0, 0)))
    return x.reshape(n, h * up, w * up, c)


def upfirdn2d(x, f, up: int = 1, down: int = 1, pad=(0, 0, 0, 0), flip_filter: bool = False):
    """Upsample (zero insertion), pad, FIR-filter, downsample; ``x`` NHWC, the same 2-D filter
    ``f`` (a numpy array, a compile-time constant) for every channel.

    ``pad = (top, bottom, left, right)``, negative values crop. The filter is applied as a true
    convolution (flipped), as NVlabs' ``upfirdn2d``; ``flip_filter=True`` correlates instead.
    Written as a sum of shifted slices: XLA fuses it into one loop over the output.
    """
    f = np.asarray(f, np.float32)
    if not flip_filter:
        f = f[::-1, ::-1]
    x = _pad_hw(zero_insert(x, up), pad)
    kh, kw = f.shape
    oh, ow = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    y = None
    for a in range(kh):
        for b in range(kw):
            if f[a, b] == 0:
                continue
            term = x[:, a : a + oh, b : b + ow, :] * float(f[a, b])
            y = term if y is None else y + term
    if down > 1:
        y = y[:, ::down, ::down, :]
    return y


def blur(x, f, pad: int | tuple = 0):
    """``upfirdn2d`` with ``up = down = 1`` and symmetric padding ``pad`` (an int or 4-tuple)."""
    if isinstance(pad, int):
        pad = (pad, pad, pad, pad)
    return upfirdn2d(x, f, pad=pad)


def conv_transpose2d(x, w, stride: int = 2, padding: int = 0, impl: str = "phase"):
    """PyTorch ``conv_transpose2d(x, W, stride, padding)`` with ``w = W.permute(2, 3, 0, 1)``,
    i.e. ``w[kh, kw, in, out]``; output size ``(H - 1) * stride + K - 2 * padding``.

    ``impl="phase"``: output pixel ``stride*m + r`` only sees kernel taps ``r, r+stride, ...``, so
    each of the ``stride**2`` phases is an ordinary convolution of the undilated input with its
    own sub-kernel (together exactly the taps of ``w``, no multiplication by inserted zeros),
    interleaved by a depth-to-space shuffle. ``impl="dilate"``: XLA's convolution of the
    zero-dilated input with the flipped kernel (the textbook form).
    """
    k = w.shape[0]
    if w.shape[1] != k:
        raise ValueError(f"square kernels only, got {w.shape}")
    n, h, wd, _ = x.shape
    cout = w.shape[3]
    out_h, out_w = (h - 1) * stride + k - 2 * padding, (wd - 1) * stride + k - 2 * padding
    if impl == "dilate":
        q = k - 1 - padding
        return jax.lax.conv_general_dilated(
            x, w[::-1, ::-1], (1, 1), ((q, q), (q, q)), lhs_dilation=(stride, stride), dimension_numbers=DN
        )
    if impl != "phase":
        raise ValueError(f"impl must be 'phase' or 'dilate', got {impl!r}")
    s = stride
    j = -(-k // s)  # taps of the longest phase
    rows = []
    for rh in range(s):
        cols = []
        for rw in range(s):
            # phase (rh, rw) sees taps r, r+s, ...; as a correlation its sub-kernel is reversed
            sub = w[rh::s][::-1][:, rw::s][:, ::-1]
            jh, jw = sub.shape[0], sub.shape[1]
            if jh == 0 or jw == 0:  # kernel smaller than the stride: this phase is all zeros
                cols.append(jnp.zeros((n, h + j - 1, wd + j - 1, cout), x.dtype))
                continue
            cols.append(conv2d(x, sub, ((jh - 1, j - 1), (jw - 1, j - 1))))  # [N, H+j-1, W+j-1, O]
        rows.append(jnp.stack(cols, axis=3))
    y = jnp.stack(rows, axis=2)  # [N, H+j-1, s, W+j-1, s, O]
    y = y.reshape(n, (h + j - 1) * s, (wd + j - 1) * s, cout)
    return y[:, padding : padding + out_h, padding : padding + out_w, :]


# StyleGAN2's resampling filter, and its x2 upsampling of the skip image / of Conv0_up.
FIR_1331 = setup_filter([1, 3, 3, 1])


def upsample2d(x, f=FIR_1331):
    """StyleGAN2's x2 upsampling of an image: zero insertion, then the filter times 4."""
    k = f.shape[0]
    p = k - 2  # total padding of the zero-inserted signal; (k-2+1)//2+1 before, (k-2)//2 after
    return upfirdn2d(x, f * 4.0, up=2, pad=((p + 1) // 2 + 1, p // 2, (p + 1) // 2 + 1, p // 2))


def modulated_conv2d(x, w, styles, *, demodulate: bool = True, up: int = 1, eps: float = 1e-8, impl: str = "phase"):
    """StyleGAN2's modulated convolution.

    ``x [N,H,W,I]``; ``w [k,k,I,O]`` (already scaled); ``styles [N,I]``. The per-sample weight
    ``w * s`` (demodulated by ``1 / sqrt(sum((w * s)^2 over k,k,I) + eps)``) is never formed:
    ``conv(x * s, w) * d``. ``up=2``: the x2 upsampling convolution of StyleGAN2 (transposed
    stride-2 convolution with the flipped kernel, then the [1,3,3,1] filter with gain 4).
    """
    k = w.shape[0]
    y = x * per_sample(styles)
    if up == 1:
        y = conv2d(y, w, k // 2)
    elif up == 2:
        y = conv_transpose2d(y, w[::-1, ::-1], stride=2, padding=0, impl=impl)
        pad = FIR_1331.shape[0] - 1 + (2 - k)  # filter taps - 1 + genforce's extra_padding (2 - k)
        y = upfirdn2d(y, FIR_1331 * 4.0, pad=((pad + 1) // 2, pad // 2, (pad + 1) // 2, pad // 2))
    else:
        raise ValueError(f"up must be 1 or 2, got {up}")
    if demodulate:
        wsq = jnp.sum(w * w, axis=(0, 1))  # [I, O]
        d = 1.0 / jnp.sqrt(jnp.matmul(styles * styles, wsq) + eps)  # [N, O]
        y = y * per_sample(d)
    return y


def truncate(wp, w_avg, psi: float, trunc_layers: int):
    """genforce truncation: ``w_avg + (wp - w_avg) * c`` with ``c = psi`` for the first
    ``trunc_layers`` rows of ``wp [N, L, D]`` and 1 after; nothing when ``psi >= 1`` or
    ``trunc_layers <= 0``."""
    if not (psi < 1.0 and trunc_layers > 0):
        return wp
    num = wp.shape[1]
    coefs = np.where(np.arange(num) < trunc_layers, np.float32(psi), np.float32(1.0)).astype(np.float32)
    avg = w_avg.reshape(1, 1, -1)
    return avg + (wp - avg) * jnp.asarray(coefs).reshape(1, num, 1)


# ---- modules ----------------------------------------------------------------------------


class EqualDense(nnx.Module):
    """Fully connected layer with equalised learning rate: ``x @ (W * gain/sqrt(in) * lr_mul)
    + b * lr_mul``. ``weight [in, out]``, ``bias [out]``."""

    def __init__(self, in_dim: int, out_dim: int, *, gain: float = 1.0, lr_mul: float = 1.0, bias: bool = True):
        self.weight = nnx.Param(zeros(in_dim, out_dim))
        self.bias = nnx.Param(zeros(out_dim)) if bias else None
        self.wscale = float(gain / math.sqrt(in_dim) * lr_mul)
        self.bscale = float(lr_mul)

    def __call__(self, x):
        y = jnp.matmul(x, self.weight[...] * self.wscale)
        if self.bias is not None:
            y = y + (self.bias[...] * self.bscale).reshape(1, -1)
        return y


class EqualConv(nnx.Module):
    """Convolution weight (and bias) with equalised learning rate; ``weight [k, k, in, out]``.
    The caller picks the convolution (``conv2d``, ``conv_transpose2d``, ...) on ``scaled()``."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, *, gain: float = 1.0, lr_mul: float = 1.0, bias: bool = True):
        self.weight = nnx.Param(zeros(kernel, kernel, in_ch, out_ch))
        self.bias = nnx.Param(zeros(out_ch)) if bias else None
        self.wscale = float(gain / math.sqrt(kernel * kernel * in_ch) * lr_mul)
        self.bscale = float(lr_mul)
        self.kernel = int(kernel)

    def scaled(self):
        return self.weight[...] * self.wscale

    def add_bias(self, y):
        return y if self.bias is None else y + row(self.bias[...] * self.bscale)

    def __call__(self, x, padding: int | None = None):
        y = conv2d(x, self.scaled(), self.kernel // 2 if padding is None else padding)
        return self.add_bias(y)


class MappingNetwork(nnx.Module):
    """z -> w: input normalisation, then ``num_layers`` equalised dense layers, each followed by
    ``lrelu(.) * act_gain`` (genforce StyleGAN: ``gain=sqrt 2, act_gain=1``; StyleGAN2 and
    NVlabs: ``gain=1, act_gain=sqrt 2``)."""

    def __init__(
        self,
        z_dim: int,
        w_dim: int,
        hidden: int,
        num_layers: int,
        *,
        lr_mul: float = 0.01,
        gain: float = 1.0,
        act_gain: float = SQRT2,
        rsqrt_norm: bool = False,
    ):
        dims = [z_dim] + [hidden] * (num_layers - 1) + [w_dim]
        self.layers = nnx.List(
            [EqualDense(dims[i], dims[i + 1], gain=gain, lr_mul=lr_mul) for i in range(num_layers)]
        )
        self.act_gain = float(act_gain)
        self.rsqrt_norm = bool(rsqrt_norm)

    def __call__(self, z):
        x = normalize_2nd_moment(z) if self.rsqrt_norm else pixel_norm(z)
        for layer in self.layers:
            x = lrelu(layer(x))
            if self.act_gain != 1.0:
                x = x * self.act_gain
        return x


class ModulatedConv(nnx.Module):
    """One StyleGAN2 layer: ``styles = affine(w) + 1``; modulated convolution (demodulated or
    not, optionally upsampling x2); stored noise times ``noise_strength``; bias; ``lrelu * sqrt 2``
    (or linear); optional clamp (NVlabs ``conv_clamp``).

    Parameters: ``weight [k,k,in,out]`` (scaled by ``1/sqrt(k*k*in)``), ``bias [out]``,
    ``style`` (an :class:`EqualDense` ``w_dim -> in``), ``noise [1,res,res,1]`` (a buffer),
    ``noise_strength []``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: int,
        w_dim: int,
        *,
        resolution: int,
        up: int = 1,
        demodulate: bool = True,
        noise: bool = True,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
    ):
        self.weight = nnx.Param(zeros(kernel, kernel, in_ch, out_ch))
        self.bias = nnx.Param(zeros(out_ch))
        self.style = EqualDense(w_dim, in_ch)
        self.use_noise = bool(noise)
        if noise:
            self.noise = Buffer(zeros(1, resolution, resolution, 1))
            self.noise_strength = nnx.Param(zeros())
        self.wscale = float(1.0 / math.sqrt(kernel * kernel * in_ch))
        self.up = int(up)
        self.demodulate = bool(demodulate)
        self.activation = str(activation)
        self.conv_clamp = None if conv_clamp is None else float(conv_clamp)

    def __call__(self, x, w, impl: str = "phase"):
        styles = self.style(w) + 1.0
        y = modulated_conv2d(x, self.weight[...] * self.wscale, styles, demodulate=self.demodulate, up=self.up, impl=impl)
        if self.use_noise:
            y = y + self.noise[...] * self.noise_strength[...]
        y = y + row(self.bias[...])
        if self.activation == "lrelu":
            y = lrelu(y) * SQRT2
        if self.conv_clamp is not None:
            y = jnp.clip(y, -self.conv_clamp, self.conv_clamp)
        return y
