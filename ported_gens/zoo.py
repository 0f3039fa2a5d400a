"""Known model names -> (family, constructor-config overrides).

Names follow the original PandA / genforce model zoo (e.g. ``stylegan2_ffhq1024``), so
``--arch`` can be any of them. A bare family name is accepted too.
"""

from __future__ import annotations

from panda_jax.errors import ConfigError

from .biggan import BigGANConfig

# name -> (family, config overrides). Families add their entries here.
ZOO: dict[str, tuple[str, dict]] = {
    "dcgan_faces64": ("dcgan", {}),
}

# genforce's model zoo (PGGAN, StyleGAN, StyleGAN2), the names the original PandA uses. All are
# built with their family's defaults and differ in resolution only (the name's trailing number).
_GENFORCE_BASE = {
    "pggan": dict(z_dim=512, fmaps_base=16 << 10, fmaps_max=512, fused_scale=False),
    "stylegan": dict(z_dim=512, w_dim=512, mapping_layers=8, mapping_fmaps=512, mapping_lr_mul=0.01,
                     fmaps_base=16 << 10, fmaps_max=512, fused_scale="auto"),
    "stylegan2": dict(z_dim=512, w_dim=512, mapping_layers=8, mapping_fmaps=512, mapping_lr_mul=0.01,
                      fmaps_base=32 << 10, fmaps_max=512),
}
_GENFORCE_NAMES = """
    pggan_celebahq1024 pggan_bedroom256 pggan_livingroom256 pggan_diningroom256 pggan_kitchen256
    pggan_church256 pggan_tower256 pggan_bridge256 pggan_restaurant256 pggan_classroom256
    pggan_conferenceroom256 pggan_person256 pggan_cat256 pggan_dog256 pggan_bird256 pggan_horse256
    pggan_sheep256 pggan_cow256 pggan_car256 pggan_bicycle256 pggan_motorbike256 pggan_bus256
    pggan_train256 pggan_boat256 pggan_airplane256 pggan_bottle256 pggan_chair256
    pggan_pottedplant256 pggan_tvmonitor256 pggan_diningtable256 pggan_sofa256
    stylegan_ffhq1024 stylegan_celebahq1024 stylegan_bedroom256 stylegan_cat256 stylegan_car512
    stylegan_celeba_partial256 stylegan_ffhq256 stylegan_ffhq512 stylegan_livingroom256
    stylegan_diningroom256 stylegan_kitchen256 stylegan_apartment256 stylegan_church256
    stylegan_tower256 stylegan_bridge256 stylegan_restaurant256 stylegan_classroom256
    stylegan_conferenceroom256 stylegan_animeface512 stylegan_animeportrait512 stylegan_artface512
    stylegan2_ffhq1024 stylegan2_church256 stylegan2_cat256 stylegan2_horse256 stylegan2_car512
    stylegan2_afhqdog512 stylegan2_afhqcat512 stylegan2_metfaces1024
""".split()
for _name in _GENFORCE_NAMES:
    _family = _name.split("_")[0]
    _res = int(_name[len(_name.rstrip("0123456789")):])
    ZOO[_name] = (_family, dict(_GENFORCE_BASE[_family], resolution=_res))

# BigGAN-deep: the HuggingFace pytorch-pretrained-BigGAN configs. PandA's name "biggan" is
# biggan-deep-256.
for _res in (128, 256, 512):
    ZOO[f"biggan-deep-{_res}"] = ("biggan", BigGANConfig.deep(_res).to_dict())
ZOO["biggan"] = ZOO["biggan-deep-256"]

# StyleGAN3: the official NVlabs pickles, by file name (PandA's model names). T: 3x3 convs,
# channel_base 32768; R: 1x1 convs, radial filters, channel base and max doubled. The 256x256
# models were trained with --cbase=16384 (R: 32768 after doubling). The entries are the settings
# that differ between models (a converter lays them over what the checkpoint says); over the
# defaults they give StyleGAN3Config.t / .r.
_SG3_T = dict(z_dim=512, w_dim=512, mapping_layers=2, channel_base=32768, channel_max=512, conv_kernel=3,
              use_radial_filters=False)
_SG3_R = dict(_SG3_T, channel_base=65536, channel_max=1024, conv_kernel=1, use_radial_filters=True)
for _cfg, _data, _res in [
    ("t", "ffhq", 1024), ("t", "ffhqu", 1024), ("t", "ffhqu", 256), ("t", "metfaces", 1024),
    ("t", "metfacesu", 1024), ("t", "afhqv2", 512), ("r", "ffhq", 1024), ("r", "ffhqu", 1024),
    ("r", "ffhqu", 256), ("r", "metfaces", 1024), ("r", "metfacesu", 1024), ("r", "afhqv2", 512),
]:
    _sg3 = dict(_SG3_T if _cfg == "t" else _SG3_R, img_resolution=_res)
    if _res == 256:
        _sg3["channel_base"] //= 2
    ZOO[f"stylegan3-{_cfg}-{_data}-{_res}x{_res}"] = ("stylegan3", _sg3)

# rosinality stylegan2-pytorch: the official StyleGAN2 (config F) models as rosinality's
# convert_weight.py writes them, by file name (stylegan2-ffhq-config-f.pt, as rosinality's README,
# pSp, e4e and StyleCLIP name them), and as GANSpace stores the same conversions
# (models/checkpoints/stylegan2/stylegan2_{class}_{resolution}.pt; bedrooms, kitchen and places
# are GANSpace's own 256 px models, built there as Generator(256, 512, 8)). All: style_dim 512,
# 8 mapping layers, channel_multiplier 2.
_ROSINALITY = dict(style_dim=512, n_mlp=8, channel_multiplier=2)
for _data, _res in [("ffhq", 1024), ("car", 512), ("cat", 256), ("church", 256), ("horse", 256)]:
    ZOO[f"stylegan2-{_data}-config-f"] = ("stylegan2_rosinality", dict(_ROSINALITY, size=_res))
    ZOO[f"stylegan2_{_data}_{_res}"] = ("stylegan2_rosinality", dict(_ROSINALITY, size=_res))
for _data in ("bedrooms", "kitchen", "places"):
    ZOO[f"stylegan2_{_data}_256"] = ("stylegan2_rosinality", dict(_ROSINALITY, size=256))


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
