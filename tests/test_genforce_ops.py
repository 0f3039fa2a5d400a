"""ported_gens.ops against PyTorch written out directly (per-sample weights, grouped and
transposed convolutions, explicit zero insertion), on small random inputs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import maxabs, nhwc

from ported_gens import ops

RNG = np.random.RandomState(7)


def nchw(x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


@pytest.mark.parametrize(
    "k,pad,impl", [(3, 0, "phase"), (3, 1, "phase"), (4, 1, "phase"), (5, 2, "phase"), (3, 0, "dilate"), (4, 1, "dilate")]
)
def test_conv_transpose2d_matches_torch(k, pad, impl):
    x = RNG.randn(2, 5, 6, 3).astype(np.float32)
    wt = RNG.randn(3, 4, k, k).astype(np.float32)  # torch layout [in, out, k, k]
    ref = nhwc(F.conv_transpose2d(nchw(x), torch.from_numpy(wt), stride=2, padding=pad))
    got = ops.conv_transpose2d(jnp.asarray(x), jnp.asarray(wt.transpose(2, 3, 0, 1)), 2, pad, impl)
    assert got.shape == ref.shape
    assert maxabs(got, ref) < 1e-5


def test_upsample2d_matches_zero_insertion_and_filter():
    x = RNG.randn(2, 5, 7, 3).astype(np.float32)
    t = nchw(x).reshape(6, 1, 5, 1, 7, 1)
    t = F.pad(t, (0, 1, 0, 0, 0, 1)).reshape(6, 1, 10, 14)  # a zero after every pixel
    k = torch.from_numpy(np.outer([1, 3, 3, 1], [1, 3, 3, 1]).astype(np.float32) / 64 * 4)[None, None]
    ref = nhwc(F.conv2d(F.pad(t, (2, 1, 2, 1)), k).reshape(2, 3, 10, 14))
    assert maxabs(ops.upsample2d(jnp.asarray(x)), ref) < 1e-6


def test_upfirdn2d_crop_and_downsample():
    x = RNG.randn(1, 9, 9, 2).astype(np.float32)
    f = RNG.rand(3, 3).astype(np.float32)  # asymmetric: the flip matters
    got = np.asarray(ops.upfirdn2d(jnp.asarray(x), f, down=2, pad=(1, -1, 0, 2)))
    xp = np.pad(x, ((0, 0), (1, 0), (0, 2), (0, 0)))[:, :-1]  # pad top 1, crop bottom 1, pad right 2
    ff = f[::-1, ::-1]  # true convolution
    ref = np.zeros((1, xp.shape[1] - 2, xp.shape[2] - 2, 2), np.float32)
    for a in range(3):
        for b in range(3):
            ref += xp[:, a : a + ref.shape[1], b : b + ref.shape[2]] * ff[a, b]
    assert got.shape == ref[:, ::2, ::2].shape
    assert maxabs(got, ref[:, ::2, ::2]) < 1e-5


@pytest.mark.parametrize("up,demod", [(1, True), (2, True), (1, False)])
def test_modulated_conv2d_matches_per_sample_weights(up, demod):
    n, cin, cout, k, h = 2, 4, 5, 3 if demod or up == 2 else 1, 6
    x = RNG.randn(n, h, h, cin).astype(np.float32)
    w = RNG.randn(k, k, cin, cout).astype(np.float32)
    s = (RNG.rand(n, cin) + 0.5).astype(np.float32)
    # per-sample weight [N, out, in, k, k], demodulated, as one grouped convolution
    wt = torch.from_numpy(w.transpose(3, 2, 0, 1))[None] * torch.from_numpy(s)[:, None, :, None, None]
    if demod:
        wt = wt / torch.sqrt((wt**2).sum(dim=[2, 3, 4], keepdim=True) + 1e-8)
    xt = nchw(x).reshape(1, n * cin, h, h)
    if up == 1:
        y = F.conv2d(xt, wt.reshape(n * cout, cin, k, k), padding=k // 2, groups=n)
    else:  # transposed stride-2 conv with the flipped kernel, then the [1,3,3,1] filter (gain 4)
        wtt = wt.flip(3, 4).transpose(1, 2).reshape(n * cin, cout, k, k)
        y = F.conv_transpose2d(xt, wtt, stride=2, groups=n)
        f = torch.from_numpy(np.outer([1, 3, 3, 1], [1, 3, 3, 1]).astype(np.float32) / 16)[None, None]
        y = F.conv2d(F.pad(y.reshape(n * cout, 1, *y.shape[2:]), (1, 1, 1, 1)), f)
    ref = nhwc(y.reshape(n, cout, y.shape[-2], y.shape[-1]))
    got = ops.modulated_conv2d(jnp.asarray(x), jnp.asarray(w), jnp.asarray(s), demodulate=demod, up=up)
    assert got.shape == ref.shape == (n, h * up, h * up, cout)
    assert maxabs(got, ref) < 2e-5


def test_norms():
    x = RNG.randn(2, 4, 4, 3).astype(np.float32) * 3 + 1
    t = nchw(x)
    c = t - t.mean(dim=[2, 3], keepdim=True)
    ref = nhwc(c / torch.sqrt((c**2).mean(dim=[2, 3], keepdim=True) + 1e-8))
    assert maxabs(ops.instance_norm(jnp.asarray(x)), ref) < 1e-6
    ref = nhwc(t / torch.sqrt((t**2).mean(dim=1, keepdim=True) + 1e-8))
    assert maxabs(ops.pixel_norm(jnp.asarray(x)), ref) < 1e-6
    assert maxabs(ops.normalize_2nd_moment(jnp.asarray(x)), ref) < 1e-6


def test_truncate_first_layers_only():
    wp = jnp.asarray(RNG.randn(2, 6, 3).astype(np.float32))
    avg = jnp.asarray(RNG.randn(3).astype(np.float32))
    out = np.asarray(ops.truncate(wp, avg, 0.5, 4))
    want = np.asarray(avg) + (np.asarray(wp) - np.asarray(avg)) * 0.5
    assert maxabs(out[:, :4], want[:, :4]) < 1e-6
    assert maxabs(out[:, 4:], wp[:, 4:]) < 1e-6
    assert ops.truncate(wp, avg, 1.0, 18) is wp and ops.truncate(wp, avg, 0.5, 0) is wp


def test_equalized_dense_and_mapping_scales():
    d = ops.EqualDense(4, 3, gain=2.0, lr_mul=0.01)
    assert d.wscale == pytest.approx(2.0 / 2.0 * 0.01) and d.bscale == 0.01
    m = ops.MappingNetwork(4, 3, 5, 2)
    assert [tuple(l.weight.shape) for l in m.layers] == [(4, 5), (5, 3)]
    # jit-compatible: the mapping of zero weights gives lrelu(bias * lr) * sqrt 2
    m.layers[1].bias[...] = jnp.full((3,), -100.0)
    out = jax.jit(lambda z: m(z))(jnp.ones((2, 4)))
    assert np.allclose(np.asarray(out), -100.0 * 0.01 * 0.2 * np.sqrt(2), atol=1e-6)
