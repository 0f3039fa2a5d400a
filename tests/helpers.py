"""Helpers the test files share: layouts, error measures, the ``panda-jax`` command, and small
generators of every family with random parameters."""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ported_gens.base import build

# ---- arrays -----------------------------------------------------------------------------


def nhwc(a):
    """NCHW (PyTorch, the test vectors) -> NHWC numpy."""
    return np.transpose(np.asarray(a), (0, 2, 3, 1))


def maxabs(a, b) -> float:
    """Max-abs difference, computed in float64."""
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def assert_close(name: str, got, want, atol: float) -> float:
    """Equal shapes and max-abs error <= ``atol``; prints and returns the error."""
    assert np.shape(got) == np.shape(want), f"{name}: shape {np.shape(got)}, expected {np.shape(want)}"
    err = maxabs(got, want)
    print(f"{name}: max-abs error {err:.2e} (max |ref| {float(np.abs(np.asarray(want)).max()):.3g})")
    assert err <= atol, f"{name}: max-abs error {err:.3e} > {atol:.1e}"
    return err


# ---- the command ------------------------------------------------------------------------

BIN = os.path.join(os.path.dirname(sys.executable), "panda-jax")


def run_cli(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """The real ``panda-jax`` command (or ``python -m panda_jax.app.cli``) in a subprocess;
    ``env`` adds to the environment."""
    cmd = [BIN] if os.path.exists(BIN) else [sys.executable, "-m", "panda_jax.app.cli"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env=None if env is None else {**os.environ, **env})


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, f"exit {res.returncode}\nstdout: {res.stdout}\nstderr: {res.stderr}"
    return res


# ---- small generators -------------------------------------------------------------------

# One small config per family: every code path of the family, compiled in well under a second
# per program on two CPU cores. The mapping learning-rate multipliers are 1 so that w follows z.
SMALL_CONFIGS = {
    "dcgan": dict(nz=8, ngf=4, nc=3, blocks=3),
    "pggan": dict(resolution=16, z_dim=8, fmaps_base=64, fmaps_max=8),
    "stylegan": dict(resolution=8, z_dim=8, w_dim=8, mapping_layers=2, mapping_fmaps=8, mapping_lr_mul=1.0,
                     fmaps_base=64, fmaps_max=8),
    "stylegan2": dict(resolution=8, z_dim=8, w_dim=8, mapping_layers=2, mapping_fmaps=8, mapping_lr_mul=1.0,
                      fmaps_base=64, fmaps_max=8),
    "stylegan2_rosinality": dict(size=8, style_dim=8, n_mlp=2, channel_multiplier=None, channels=[8, 4], lr_mlp=1.0),
    "stylegan3": dict(z_dim=8, w_dim=8, img_resolution=16, num_layers=4, mapping_lr_multiplier=1.0,
                      channel_base=64, channel_max=8, filter_size=3),
    "biggan": dict(output_dim=16, z_dim=8, class_embed_dim=8, channel_width=4, num_classes=5,
                   layers=[[True, 16, 8], [False, 8, 4], [True, 4, 2], [False, 2, 1]],
                   attention_layer_position=2, n_stats=3),
}
# Families without an equalised learning rate get fan-in scaled random weights.
_FAN_IN_SCALED = ("dcgan", "biggan")


def _random_leaf(rng, path, value, fan_in_scaled: bool):
    name = str(getattr(path[-1], "key", path[-1]))
    shape = np.shape(value)
    if name == "transform":  # StyleGAN3's user transform: the identity, as stored in real models
        return np.asarray(value)
    if name in ("var", "vars", "magnitude_ema"):  # must be positive
        return (0.5 + rng.random(shape)).astype(np.float32)
    if name in ("up_filter", "down_filter"):  # a smoothing filter summing to 1
        f = np.abs(rng.standard_normal(shape)) + 0.1
        return (f / f.sum()).astype(np.float32)
    x = rng.standard_normal(shape)
    if len(shape) >= 2 and fan_in_scaled:
        x = x / np.sqrt(np.prod(shape[:-1]))
    elif len(shape) < 2:
        x = 0.5 * x
    return x.astype(np.float32)


def small_generator(family: str, seed: int = 0):
    """``build(family, SMALL_CONFIGS[family])`` with random parameters and buffers."""
    G = build(family, SMALL_CONFIGS[family])
    graphdef, state = nnx.split(G)
    rng = np.random.default_rng(seed)
    pure = jax.tree_util.tree_map_with_path(
        lambda p, v: jnp.asarray(_random_leaf(rng, p, v, family in _FAN_IN_SCALED)), nnx.to_pure_dict(state)
    )
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def in_float64(G):
    """``G`` with its parameters and buffers in float64; use it under ``jax.enable_x64(True)``."""
    graphdef, state = nnx.split(G)
    state = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) if a.dtype == jnp.float32 else a, state)
    return nnx.merge(graphdef, state)
