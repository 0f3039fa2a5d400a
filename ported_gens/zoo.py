"""Known model names -> (family, constructor-config overrides).

Names follow the original PandA / genforce model zoo (e.g. ``stylegan2_ffhq1024``), so
``--arch`` can be any of them. A bare family name is accepted too.
"""

from __future__ import annotations

from panda_jax.errors import ConfigError

# name -> (family, config overrides). Families add their entries here.
ZOO: dict[str, tuple[str, dict]] = {
    "dcgan_faces64": ("dcgan", {}),
}

# BigGAN-deep: the HuggingFace pytorch-pretrained-BigGAN configs. PandA's name "biggan" is
# biggan-deep-256. Blocks are [upsample, in_mult, out_mult] of channel_width.
_BIGGAN_DEEP = dict(z_dim=128, class_embed_dim=128, channel_width=128, num_classes=1000,
                    attention_layer_position=8, eps=1e-4, n_stats=51)
_BIGGAN_DEEP_128 = [[False, 16, 16], [True, 16, 16], [False, 16, 16], [True, 16, 8], [False, 8, 8],
                    [True, 8, 4], [False, 4, 4], [True, 4, 2], [False, 2, 2], [True, 2, 1]]
_BIGGAN_DEEP_256 = [[False, 16, 16], [True, 16, 16], [False, 16, 16], [True, 16, 8], [False, 8, 8],
                    [True, 8, 8], [False, 8, 8], [True, 8, 4], [False, 4, 4], [True, 4, 2],
                    [False, 2, 2], [True, 2, 1]]
_BIGGAN_DEEP_512 = _BIGGAN_DEEP_256 + [[False, 1, 1], [True, 1, 1]]
ZOO.update({
    "biggan-deep-128": ("biggan", dict(_BIGGAN_DEEP, output_dim=128, layers=_BIGGAN_DEEP_128)),
    "biggan-deep-256": ("biggan", dict(_BIGGAN_DEEP, output_dim=256, layers=_BIGGAN_DEEP_256)),
    "biggan-deep-512": ("biggan", dict(_BIGGAN_DEEP, output_dim=512, layers=_BIGGAN_DEEP_512)),
    "biggan": ("biggan", dict(_BIGGAN_DEEP, output_dim=256, layers=_BIGGAN_DEEP_256)),
})


def family_of(name: str) -> str:
    from .base import FAMILIES

    if name in ZOO:
        return ZOO[name][0]
    if name in FAMILIES:
        return name
    raise ConfigError(
        f"unknown model name {name!r}; use a family ({sorted(FAMILIES)}) or a zoo name ({sorted(ZOO)})"
    )


def config_of(name: str) -> dict:
    return dict(ZOO[name][1]) if name in ZOO else {}
