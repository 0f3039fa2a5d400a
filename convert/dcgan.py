"""DCGAN-tutorial generator state dicts -> :class:`ported_gens.dcgan.DCGAN`.

Accepted sources: a plain generator state dict with keys ``main.{i}.*`` (``nn.Sequential``
indices of the PyTorch DCGAN tutorial's ``Generator``), optionally under ``module.`` (saved
from ``nn.DataParallel``), or a training checkpoint dict holding it under ``netG_state_dict``
(the ``gan-face-generate`` package's ``weights.tar``), ``netG``, ``generator``,
``state_dict`` or ``model``.

Layout: transposed convs at ``main.0, main.3, ..., main.{3B}``, batch norms at
``main.1, main.4, ..., main.{3B-2}`` (ReLUs and the final tanh hold no tensors). ``nz``,
``ngf``, ``nc`` and the number of blocks ``B`` are read from the weight shapes.
"""

from __future__ import annotations

import re

from panda_jax.errors import CheckpointError

from . import common
from .transforms import Rule, conv_transposed_flipped, projection, shape_of

NAME = "dcgan"
FAMILIES = ("dcgan",)
DESCRIPTION = "DCGAN"

WRAPPER_KEYS = ("netG_state_dict", "netG", "generator", "state_dict", "model")
_KEY = re.compile(r"^main\.(\d+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$")
_EXPECTED = (
    "a DCGAN generator state dict as in the PyTorch DCGAN tutorial (keys main.0.weight "
    "[nz, ngf*8, 4, 4], main.1.weight/bias/running_mean/running_var, main.3.weight, ...)"
)


def state_dict(obj):
    """The generator state dict inside ``obj`` (unwrapped, ``module.`` prefix removed), or None."""
    if not isinstance(obj, dict):
        return None
    for k in WRAPPER_KEYS:
        if isinstance(obj.get(k), dict):
            obj = obj[k]
            break
    if not obj or not all(isinstance(k, str) for k in obj):
        return None
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _conv_indices(sd: dict) -> list[int]:
    return sorted(
        int(m.group(1)) for k in sd if (m := _KEY.match(k)) and m.group(2) == "weight" and len(shape_of(sd[k])) == 4
    )


def claims(obj) -> bool:
    """Only ``main.{i}.*`` keys, with 4-D weights exactly at ``main.0, main.3, ...``."""
    sd = state_dict(obj)
    if sd is None or not all(_KEY.match(k) for k in sd):
        return False
    convs = _conv_indices(sd)
    return len(convs) >= 2 and convs == [3 * i for i in range(len(convs))]


def _describe(obj) -> str:
    if isinstance(obj, dict):
        keys = [str(k) for k in obj][:6]
        more = f" (+{len(obj) - 6} more)" if len(obj) > 6 else ""
        return "keys " + ", ".join(keys) + more
    return f"a {type(obj).__name__}"


def infer_config(sd: dict) -> dict:
    """``{nz, ngf, nc, blocks}`` from the transposed-conv weight shapes (arrays or bare shapes)."""
    convs = _conv_indices(sd)
    blocks = len(convs) - 1
    if blocks < 1 or convs != [3 * i for i in range(blocks + 1)]:
        raise CheckpointError(
            f"the state dict has 4-D weights at main.{convs}; a DCGAN generator has them at "
            "main.0, main.3, main.6, ... (transposed conv, batch norm, ReLU per block). "
            f"Expected {_EXPECTED}"
        )
    shapes = [shape_of(sd[f"main.{i}.weight"]) for i in convs]
    if any(s[2:] != (4, 4) for s in shapes):
        raise CheckpointError(
            f"DCGAN transposed convs have 4x4 kernels; got weight shapes {shapes}. Expected {_EXPECTED}"
        )
    for a, b in zip(shapes, shapes[1:]):
        if a[1] != b[0]:
            raise CheckpointError(f"consecutive transposed convs do not chain: {a} then {b}")
    nz, ngf, nc = shapes[0][0], shapes[-1][0], shapes[-1][1]
    got = [s[1] for s in shapes[:-1]]
    want = [ngf * 2 ** (blocks - l) for l in range(1, blocks + 1)]
    if got != want:
        raise CheckpointError(
            f"the block widths {got} do not halve per block down to ngf={ngf} (expected {want}); "
            "only the DCGAN-tutorial layout (ngf * 2**k channels) is supported"
        )
    return {"nz": int(nz), "ngf": int(ngf), "nc": int(nc), "blocks": int(blocks)}


def rules(family: str, config: dict) -> tuple[list[Rule], list[str]]:
    """``(rules, the batch norms' num_batches_tracked)`` of a DCGAN of ``config``."""
    if family not in FAMILIES:
        raise CheckpointError(f"no DCGAN key map for family {family!r}; known: {list(FAMILIES)}")
    B = config["blocks"]
    r = [Rule("convs/0/kernel", "main.0.weight", projection)]  # [nz, C, 4, 4] -> [nz, 4, 4, C]
    for i in range(1, B + 1):
        r.append(Rule("out/kernel" if i == B else f"convs/{i}/kernel", f"main.{3 * i}.weight", conv_transposed_flipped))
    for i in range(B):
        bn = f"main.{3 * i + 1}"
        r += [Rule(f"norms/{i}/scale", f"{bn}.weight"), Rule(f"norms/{i}/bias", f"{bn}.bias"),
              Rule(f"norms/{i}/mean", f"{bn}.running_mean"), Rule(f"norms/{i}/var", f"{bn}.running_var")]
    return r, [f"main.{3 * i + 1}.num_batches_tracked" for i in range(B)]


def _source(obj) -> dict:
    sd = state_dict(obj)
    if sd is None or "main.0.weight" not in sd:
        raise CheckpointError(
            f"the checkpoint is not a DCGAN generator: it holds {_describe(obj)}; expected {_EXPECTED}. "
            "Pass the generator's state dict, or another --arch for another architecture"
        )
    return sd


def config_for(obj, arch: str | None = None) -> tuple[str, dict]:
    """``("dcgan", config)`` read off the weight shapes; ``arch`` (a dcgan zoo name) overrides."""
    config = infer_config(_source(obj))
    if arch:
        config.update(common.arch_config(arch)[1])
    return "dcgan", config


def to_generator(obj, arch: str | None = None):
    """The converter entry point (see :mod:`convert`)."""
    sd = _source(obj)
    family, config = config_for(obj, arch)
    return common.build(
        sd, family, config, *rules(family, config), what="DCGAN checkpoint",
        hint=f"a generator of another layout than the DCGAN tutorial's (inferred {config})",
    )
