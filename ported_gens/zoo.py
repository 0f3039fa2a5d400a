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
