"""What genforce's PGGAN, StyleGAN and StyleGAN2 share: resolutions, channel widths, the
truncation default, and the config fields and checks.

``C(res) = min(fmaps_base // res, fmaps_max)`` channels at resolution ``res`` (genforce
``get_nf``). :class:`GenforceConfig` holds the settings of all three; :class:`GenforceStyleConfig`
adds the mapping network's (StyleGAN, StyleGAN2).
"""

from __future__ import annotations

import dataclasses

from . import ops
from .config import MAX_DEPTH, Choice, FamilyConfig, Flag, Float, Int, setting

RESOLUTIONS = (8, 16, 32, 64, 128, 256, 512, 1024)
DEFAULT_TRUNC_LAYERS = 18  # PandA's trunc_layers: every row of w+ up to 1024 px


def channels(res: int, fmaps_base: int, fmaps_max: int) -> int:
    """Feature maps at resolution ``res`` (genforce ``get_nf``)."""
    return min(int(fmaps_base) // int(res), int(fmaps_max))


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenforceConfig(FamilyConfig):
    """Settings every genforce generator has (genforce's constructor names)."""

    resolution: int = setting(Choice(*RESOLUTIONS))
    z_dim: int = setting(Int(), 512)
    fmaps_base: int = setting(Int(), 16 << 10)
    fmaps_max: int = setting(Int(), 512)
    image_channels: int = setting(Int(), 3)
    final_tanh: bool = setting(Flag(), False)

    def nf(self, res: int) -> int:
        """Channels at resolution ``res``."""
        return channels(res, self.fmaps_base, self.fmaps_max)

    @property
    def log2(self) -> int:
        """``log2(resolution)``."""
        return self.resolution.bit_length() - 1

    def check(self):
        if self.nf(self.resolution) < 1:  # channels only shrink with the resolution
            self.fail(
                f"fmaps_base {self.fmaps_base} / fmaps_max {self.fmaps_max} leave no channels at "
                f"{self.resolution} px (fmaps_base // resolution = 0); give fmaps_base >= {self.resolution}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenforceStyleConfig(GenforceConfig):
    """A genforce generator with a mapping network (StyleGAN, StyleGAN2)."""

    w_dim: int = setting(Int(), 512)
    mapping_layers: int = setting(Int(hi=MAX_DEPTH), 8)
    mapping_fmaps: int = setting(Int(), 512)
    mapping_lr_mul: float = setting(Float(positive=True), 0.01)

    @property
    def num_ws(self) -> int:
        """Rows of w+: two per resolution from 4x4 on."""
        return 2 * self.log2 - 2


def truncate_genforce(G, wp, psi: float):
    """genforce's truncation of w+ towards ``G.w_avg`` for its first ``G.trunc_layers`` rows."""
    return ops.truncate(wp, G.w_avg[...], psi, G.trunc_layers)
