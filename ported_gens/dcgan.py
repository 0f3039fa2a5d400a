"""DCGAN (the PyTorch DCGAN-tutorial generator layout) in Flax NNX, and the embedded faces model.

The generator maps ``z [N, nz]`` through ``blocks`` up-sampling blocks, each a bias-free
transposed convolution (kernel 4; the first 1 -> 4 pixels, the others stride 2, padding 1), a
batch norm (evaluation mode: the stored running statistics) and a ReLU, then a last transposed
convolution to ``nc`` channels and ``tanh``. Widths halve per block: block ``l`` has
``ngf * 2**(blocks - l)`` channels, so the tutorial's 64 px model (``blocks=4``) runs
``4x4x512 -> 8x8x256 -> 16x16x128 -> 32x32x64 -> 64x64x3``.

Layers (PandA's ``Z``): layer ``l`` (1 .. ``blocks``) is the output of block ``l`` after its
ReLU. For the faces model: 1 ``4x4x512``, 2 ``8x8x256``, 3 ``16x16x128``, 4 ``32x32x64``.

Transposed convolutions run as four phase convolutions of the undilated input
(:func:`ported_gens.ops.conv_transpose2d`, ``impl="phase"``): with JAX 0.10 on a 2-core CPU
this took 55 ms where the input-dilated convolution (``impl="dilate"``, which multiplies the
inserted zeros too) took 86 to 94 ms, for 64 samples of either 8x8x256 -> 16x16x128 or
4x4x512 -> 8x8x256. The kernel is stored as before, flipped in space. The first block, whose
input is 1x1, is a plain matmul.

:func:`default_checkpoint` finds the faces DCGAN that the ``gan-face-generate`` package ships
(``weights.tar``), without importing that package.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from typing import ClassVar

import jax
import jax.numpy as jnp
from flax import nnx

from panda_jax.errors import CheckpointError, ConfigError

from . import ops
from .base import Buffer, Generator, Latents, register_family
from .config import FamilyConfig, Int, setting

IMPL = "phase"  # the transposed convolutions' form, see ops.conv_transpose2d
DEFAULT_PACKAGE = "gan-face-generate"
DEFAULT_MODULE = "gan_face_generate"
DEFAULT_FILE = "weights.tar"


def default_checkpoint() -> str:
    """The path of the embedded faces DCGAN checkpoint (``gan_face_generate/weights.tar``).

    The package is located with :func:`importlib.util.find_spec`; none of its modules is
    imported: only the weights file is read (safely, by ``convert``).
    """
    try:
        spec = importlib.util.find_spec(DEFAULT_MODULE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        path = os.path.join(loc, DEFAULT_FILE)
        if os.path.isfile(path):
            return path
    where = f" (looked in {locations})" if locations else ""
    raise CheckpointError(
        f"the default faces DCGAN checkpoint ({DEFAULT_MODULE}/{DEFAULT_FILE}) is not installed{where}; "
        f"install it with: pip install --no-deps {DEFAULT_PACKAGE}"
    )


class BatchNorm(nnx.Module):
    """Batch norm in evaluation mode: ``(x - mean) / sqrt(var + eps) * scale + bias``."""

    def __init__(self, n: int, eps: float = 1e-5):
        self.scale = nnx.Param(jnp.ones((n,), jnp.float32))
        self.bias = nnx.Param(ops.zeros(n))
        self.mean = Buffer(ops.zeros(n))
        self.var = Buffer(jnp.ones((n,), jnp.float32))
        self.eps = float(eps)

    def __call__(self, x):
        c = lambda v: v[...].reshape((1,) * (x.ndim - 1) + (-1,))  # noqa: E731  (channels last)
        return (x - c(self.mean)) * jax.lax.rsqrt(c(self.var) + self.eps) * c(self.scale) + c(self.bias)


class Project(nnx.Module):
    """Transposed conv of a 1x1 input to ``k x k`` (stride 1, no padding): a matmul.

    ``kernel [nz, k, k, C_out]`` is the torch weight ``[nz, C_out, k, k]`` moved channels-last.
    """

    def __init__(self, c_in: int, c_out: int, k: int = 4):
        self.kernel = nnx.Param(ops.zeros(c_in, k, k, c_out))

    def __call__(self, z):
        return jnp.einsum("nc,chwo->nhwo", z, self.kernel[...])


class UpConv(nnx.Module):
    """Transposed conv, kernel 4, stride 2, padding 1 (doubles H and W), no bias.

    ``kernel [4, 4, C_in, C_out]`` (HWIO) is the torch weight ``[C_in, C_out, 4, 4]`` flipped
    in space; the transposed conv is then the conv of the 2x-dilated input padded by 2.
    """

    def __init__(self, c_in: int, c_out: int):
        self.kernel = nnx.Param(ops.zeros(4, 4, c_in, c_out))

    def __call__(self, x):
        # ops.conv_transpose2d takes the unflipped torch kernel: flip the stored one back
        return ops.conv_transpose2d(x, self.kernel[...][::-1, ::-1], stride=2, padding=1, impl=IMPL)


def widths(ngf: int, blocks: int) -> list[int]:
    """Channel widths of blocks 1 .. ``blocks``: ``ngf * 2**(blocks - l)``."""
    return [ngf * 2 ** (blocks - l) for l in range(1, blocks + 1)]


@dataclasses.dataclass(frozen=True, kw_only=True)
class DCGANConfig(FamilyConfig):
    """The DCGAN-tutorial generator's settings (the PyTorch tutorial's names): ``nz`` latent size,
    ``ngf`` base width, ``nc`` image channels, ``blocks`` up-sampling blocks (the image is
    ``4 * 2**blocks`` pixels square). The defaults are the embedded 64 px faces model's."""

    family: ClassVar[str] = "dcgan"
    nz: int = setting(Int(), 100)
    ngf: int = setting(Int(), 64)
    nc: int = setting(Int(), 3)
    blocks: int = setting(Int(hi=12), 4)  # 16384 px at most

    @classmethod
    def faces64(cls) -> "DCGANConfig":
        """The embedded faces model (``dcgan_faces64``)."""
        return cls()

    @property
    def widths(self) -> list[int]:
        return widths(self.ngf, self.blocks)


@register_family("dcgan")
class DCGAN(Generator):
    """The DCGAN-tutorial generator (see :class:`DCGANConfig`).

    ``truncation`` scales ``z`` towards its mean (zero): ``z * truncation``.
    """

    Config = DCGANConfig

    def __init__(self, config: DCGANConfig | dict | None = None, /, **settings):
        super().__init__(config, **settings)
        w = self.cfg.widths
        self.convs = nnx.List([Project(self.cfg.nz, w[0])] + [UpConv(w[i - 1], w[i]) for i in range(1, len(w))])
        self.norms = nnx.List([BatchNorm(c) for c in w])
        self.out = UpConv(w[-1], self.cfg.nc)

    # ---- the Generator interface ---------------------------------------------------------
    def _layer_shapes(self):
        w = self.cfg.widths
        return {l: (4 * 2 ** (l - 1), 4 * 2 ** (l - 1), w[l - 1]) for l in range(1, self.cfg.blocks + 1)}

    @property
    def z_dim(self) -> int:
        return self.cfg.nz

    def _first_projection(self, layers):
        """The first transposed convolution's kernel ``[nz, 4, 4, C]`` as ``[4 * 4 * C, nz]`` (rows
        in (row, column, channel) order): genforce/sefa's first-layer weight for a z-space GAN."""
        if layers is not None:
            raise ConfigError(f"dcgan's first projection is its first layer; give layers=None, not {layers!r}")
        return self.convs[0].kernel[...].reshape(self.cfg.nz, -1).T

    def _block(self, i: int, x):
        return jax.nn.relu(self.norms[i](self.convs[i](x)))

    def _features(self, lat: Latents, layer: int, truncation: float):
        x = ops.as_float(lat.z)
        if truncation != 1.0:
            x = x * truncation
        for i in range(layer):
            x = self._block(i, x)
        return x, {}

    def _render(self, Z, layer: int, ctx: dict):
        x = Z
        for i in range(layer, self.cfg.blocks):
            x = self._block(i, x)
        return jnp.tanh(self.out(x))
