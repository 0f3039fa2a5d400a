"""genforce checkpoints (PGGAN, StyleGAN, StyleGAN2 ``.pth``) -> the Flax ports.

A genforce checkpoint is a ``torch.save`` dict with ``generator`` and, for most models,
``generator_smooth`` (the averaged weights); like the original PandA loader, ``generator_smooth``
is used when present. A bare state dict of one of these generators is accepted too.

The family and its settings are read off the keys and shapes: resolution from the number of
conv layers, ``z_dim``/``w_dim``/mapping depth and width from the mapping weights, channel counts
from every conv (``fmaps_base``/``fmaps_max`` are the ones that reproduce them). Two settings
leave no trace in the shapes and take genforce's defaults (those of every model in its zoo):
``mapping_lr_mul = 0.01`` and ``fused_scale`` (StyleGAN ``"auto"``, PGGAN ``False`` unless the
upsampling weights' in/out channels show the transposed layout). ``arch`` (a zoo name such as
``stylegan2_ffhq1024``) overrides the inferred settings; any disagreement with the file is then
reported key by key.

Key map (torch -> Flax, layouts: dense ``[out,in] -> [in,out]``, conv ``[out,in,k,k] ->
[k,k,in,out]``, NCHW buffers -> NHWC):

=====================================  ===========================================
PGGAN ``layer{i}.weight|bias``          ``convs/{i}/weight|bias`` (fused upsampling
                                        weights are ``[in,out,k,k]``)
PGGAN ``output{last}.*``                ``torgb/*``
``mapping.dense{i}.weight|bias``        ``mapping/layers/{i}/weight|bias``
``truncation.w_avg``                    ``w_avg``
StyleGAN ``synthesis.layer0.const``     ``const``
StyleGAN ``synthesis.layer{i}.weight``  ``convs/{i}/conv/weight``
StyleGAN ``...layer{i}.bias``,          ``convs/{i}/bias``, ``convs/{i}/noise_weight``,
``apply_noise.weight|noise``,           ``convs/{i}/noise``, ``convs/{i}/style/*``
``style.*``
StyleGAN ``synthesis.output{last}.*``   ``torgb/*``
StyleGAN2 ``synthesis.early_layer.const``  ``const``
StyleGAN2 ``synthesis.layer{i}.*``      ``convs/{i}/weight|bias|noise|noise_strength|style/*``
StyleGAN2 ``synthesis.output{k}.*``     ``torgbs/{k}/weight|bias|style/*``
=====================================  ===========================================

Deliberately not converted: ``lod`` (checked to be 0, a fully grown network), the ToRGB layers of
the lower resolutions of PGGAN/StyleGAN (unused at ``lod = 0``), and the fixed blur/upsampling
filter buffers (the ports build the same filters).

NVlabs networks are :mod:`convert.nvlabs_stylegan2`'s and :mod:`convert.stylegan3`'s, rosinality's
:mod:`convert.rosinality`'s (``convert`` picks the converter); given here (``--arch`` with a
genforce model name), they are refused by name.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from panda_jax.errors import CheckpointError

from . import common, readers
from .transforms import Rule, conv, conv_transposed, dense, nchw, shape_of

NAME = "genforce"
FAMILIES = ("pggan", "stylegan", "stylegan2")
DESCRIPTION = "genforce PGGAN/StyleGAN/StyleGAN2"

DEFAULTS = {
    "pggan": {"fmaps_base": 16 << 10},
    "stylegan": {"fmaps_base": 16 << 10},
    "stylegan2": {"fmaps_base": 32 << 10},
}


# ---- reading the container --------------------------------------------------------------


def _is_state_dict(obj) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(k, str) for k in obj) and all(
        isinstance(v, (np.ndarray, np.generic, tuple)) for v in obj.values()
    )


def unwrap(obj) -> tuple[dict, str]:
    """The generator state dict inside a genforce checkpoint and where it came from:
    ``generator_smooth`` if present, else ``generator``, else ``obj`` itself."""
    if isinstance(obj, Mapping):
        for key in ("generator_smooth", "generator"):
            if key in obj and _is_state_dict(obj[key]):
                return dict(obj[key]), key
        if _is_state_dict(obj):
            return dict(obj), "state dict"
    raise CheckpointError(
        "not a genforce checkpoint: expected a dict with 'generator_smooth' or 'generator' state dicts "
        f"(or a bare state dict); got {_describe(obj)}"
    )


def _describe(obj) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj)[:6]
        return f"a dict with keys {keys}{' ...' if len(obj) > 6 else ''}"
    return type(obj).__name__


def layout(sd: Mapping) -> str | None:
    """Which generator layout a state dict has: ``pggan``, ``stylegan``, ``stylegan2`` (genforce),
    ``nvlabs`` (NVlabs StyleGAN2/-ADA/3), ``rosinality`` (rosinality's stylegan2-pytorch), or None."""
    keys = set(sd)
    if "synthesis.early_layer.const" in keys and "mapping.dense0.weight" in keys:
        return "stylegan2"
    if "synthesis.layer0.const" in keys and "mapping.dense0.weight" in keys:
        return "stylegan"
    if "layer0.weight" in keys and "output0.weight" in keys and not any(k.startswith("mapping.") for k in keys):
        return "pggan"
    if any(k.startswith("synthesis.b4.") or k.startswith("synthesis.input.") for k in keys) and any(
        k.startswith("mapping.fc") for k in keys
    ):
        return "nvlabs"
    if "input.input" in keys or any(k.startswith(("convs.", "to_rgbs.", "style.1.", "conv1.conv.")) for k in keys):
        return "rosinality"
    return None


def _rosinality_error(where: str) -> CheckpointError:
    return CheckpointError(
        f"{where} is a rosinality stylegan2-pytorch generator (keys like 'style.1.weight', 'input.input', "
        "'convs.0.conv.weight', 'to_rgbs.0.conv.weight'), not a genforce checkpoint; convert it without --arch, "
        "or with --arch stylegan2_rosinality or a rosinality model name (e.g. stylegan2-ffhq-config-f)"
    )


def _nvlabs_error(sd: Mapping, arch: str | None = None) -> CheckpointError:
    which = "StyleGAN3" if any(k.startswith("synthesis.input.") for k in sd) else "StyleGAN2"
    if arch:
        family = common.arch_config(arch)[0]
        return CheckpointError(f"the checkpoint is an NVlabs {which} network, but --arch {arch!r} is a {family} model")
    return CheckpointError(
        f"the checkpoint is an NVlabs {which} network (keys synthesis.b4.* or synthesis.input.*, mapping.fc*), "
        f"not a genforce one; convert it without --arch, or with a {which.lower()} model name"
    )


def claims(obj) -> bool:
    """A genforce checkpoint (rosinality's are :mod:`convert.rosinality`'s)."""
    if isinstance(obj, Mapping):
        if "g_ema" in obj and isinstance(obj["g_ema"], Mapping):
            return False
        try:
            sd, _ = unwrap(obj)
        except CheckpointError:
            return False
        return layout(sd) in FAMILIES
    return False


def _state_dict(obj, arch: str | None = None) -> dict:
    """The generator state dict of a read checkpoint; rosinality and NVlabs ones are refused by
    name (``convert`` gives NVlabs networks to their own converters)."""
    if readers.is_record(obj):
        raise _nvlabs_error(readers.state_dict(obj), arch)
    if isinstance(obj, Mapping) and "g_ema" in obj and isinstance(obj["g_ema"], Mapping):
        if layout(obj["g_ema"]) == "rosinality":
            raise _rosinality_error("the checkpoint ('g_ema')")
    sd, _ = unwrap(obj)
    kind = layout(sd)
    if kind == "rosinality":
        raise _rosinality_error("the checkpoint")
    if kind == "nvlabs":
        raise _nvlabs_error(sd, arch)
    return sd


# ---- config inference -------------------------------------------------------------------


def _indices(sd, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd for m in [rx.fullmatch(k)] if m})


def _need(sd, key: str, family: str):
    if key not in sd:
        raise CheckpointError(f"the {family} checkpoint has no {key!r}; it is incomplete or of another architecture")
    return shape_of(sd[key])


def infer_fmaps(family: str, nf: dict[int, int]) -> tuple[int, int]:
    """``(fmaps_base, fmaps_max)`` reproducing ``nf[res] = min(fmaps_base // res, fmaps_max)``."""
    return common.infer_fmaps(family, nf, DEFAULTS[family]["fmaps_base"])


def _check_res(family: str, n_layers: int, per_res: int, offset: int) -> int:
    log2, rem = divmod(n_layers + offset, per_res)
    if rem or not 3 <= log2 <= 10:
        raise CheckpointError(
            f"the {family} checkpoint has {n_layers} conv layers, which fits no resolution from 8 to 1024 px"
        )
    return 2**log2


def _mapping_config(sd, family):
    dense = _indices(sd, r"mapping\.dense(\d+)\.weight")
    if dense != list(range(len(dense))) or not dense:
        raise CheckpointError(f"the {family} checkpoint's mapping layers are {dense}; expected dense0 .. denseN-1")
    if "mapping.label_weight" in sd:
        raise CheckpointError(
            f"the {family} checkpoint is class-conditional (mapping.label_weight); conditional genforce models are not supported"
        )
    first = _need(sd, "mapping.dense0.weight", family)
    last = _need(sd, f"mapping.dense{dense[-1]}.weight", family)
    w_avg = _need(sd, "truncation.w_avg", family)
    if last[0] != w_avg[0]:
        raise CheckpointError(
            f"the {family} checkpoint maps to {last[0]} values but w_avg has {w_avg[0]}; "
            "per-layer w (repeat_w=False) models are not supported"
        )
    return {
        "z_dim": first[1],
        "w_dim": w_avg[0],
        "mapping_layers": len(dense),
        "mapping_fmaps": first[0] if len(dense) > 1 else w_avg[0],
        "mapping_lr_mul": 0.01,
    }


def infer_config(sd: Mapping) -> dict:
    """The config of a genforce state dict (values: arrays or bare shapes), for the family
    :func:`layout` names."""
    family = layout(sd)
    if family == "rosinality":
        raise _rosinality_error("the state dict")
    if family not in FAMILIES:
        raise CheckpointError(f"not a genforce PGGAN/StyleGAN/StyleGAN2 state dict ({_describe(sd)})")
    if family == "pggan":
        layers = _indices(sd, r"layer(\d+)\.weight")
        res = _check_res(family, len(layers), 2, 2)
        nf = {4 * 2**k: _need(sd, f"layer{2 * k + 1}.weight", family)[0] for k in range(len(layers) // 2)}
        base, fmax = infer_fmaps(family, nf)
        fused = False
        for k in range(1, len(layers) // 2):
            s = _need(sd, f"layer{2 * k}.weight", family)
            r = 4 * 2**k
            if nf[r] != nf[r // 2]:
                fused = s[0] == nf[r // 2] and s[1] == nf[r]
                break
        return dict(
            resolution=res, z_dim=_need(sd, "layer0.weight", family)[1], fmaps_base=base, fmaps_max=fmax,
            fused_scale=fused, image_channels=_need(sd, "output0.weight", family)[0], final_tanh=False,
        )
    if family == "stylegan":
        layers = _indices(sd, r"synthesis\.layer(\d+)\.style\.weight")
        res = _check_res(family, len(layers), 2, 2)
        nf = {4 * 2**k: _need(sd, f"synthesis.layer{2 * k + 1}.weight", family)[0] for k in range(len(layers) // 2)}
        base, fmax = infer_fmaps(family, nf)
        return dict(
            resolution=res, **_mapping_config(sd, family), fmaps_base=base, fmaps_max=fmax, fused_scale="auto",
            image_channels=_need(sd, "synthesis.output0.weight", family)[0], final_tanh=False,
        )
    layers = _indices(sd, r"synthesis\.layer(\d+)\.weight")
    res = _check_res(family, len(layers), 2, 3)
    outputs = _indices(sd, r"synthesis\.output(\d+)\.weight")
    if len(outputs) != len(layers) // 2 + 1:
        raise CheckpointError(
            f"the stylegan2 checkpoint has ToRGB layers {outputs}; only the 'skip' architecture (a ToRGB per "
            "resolution) is supported, not 'origin' or 'resnet'"
        )
    nf = {4 * 2**k: _need(sd, f"synthesis.layer{2 * k}.weight", family)[0] for k in range(len(layers) // 2 + 1)}
    base, fmax = infer_fmaps(family, nf)
    return dict(
        resolution=res, **_mapping_config(sd, family), fmaps_base=base, fmaps_max=fmax,
        image_channels=_need(sd, "synthesis.output0.weight", family)[0], final_tanh=False, conv_clamp=None,
    )


# ---- key maps -----------------------------------------------------------------------------


def _mapping_rules(cfg) -> list[Rule]:
    rules = []
    for i in range(cfg["mapping_layers"]):
        rules.append(Rule(f"mapping/layers/{i}/weight", f"mapping.dense{i}.weight", dense))
        rules.append(Rule(f"mapping/layers/{i}/bias", f"mapping.dense{i}.bias"))
    rules.append(Rule("w_avg", "truncation.w_avg"))
    return rules


def rules(family: str, config: dict) -> tuple[list[Rule], list[str]]:
    """``(rules, torch keys deliberately not converted)`` of a genforce ``family`` network."""
    log2 = int(np.log2(config["resolution"]))
    last = log2 - 2
    r, ignored = [], []
    if family == "pggan":
        for i in range(2 * (log2 - 1)):
            fused_up = config["fused_scale"] and i % 2 == 0 and i > 0
            r.append(Rule(f"convs/{i}/weight", f"layer{i}.weight", conv_transposed if fused_up else conv))
            r.append(Rule(f"convs/{i}/bias", f"layer{i}.bias"))
        r += [Rule("torgb/weight", f"output{last}.weight", conv), Rule("torgb/bias", f"output{last}.bias")]
        ignored += ["lod"] + [f"output{k}.{p}" for k in range(last) for p in ("weight", "bias")]
    elif family == "stylegan":
        r += _mapping_rules(config)
        r.append(Rule("const", "synthesis.layer0.const", nchw))
        for i in range(2 * (log2 - 1)):
            s = f"synthesis.layer{i}"
            if i > 0:
                r.append(Rule(f"convs/{i}/conv/weight", f"{s}.weight", conv))
            r += [
                Rule(f"convs/{i}/bias", f"{s}.bias"),
                Rule(f"convs/{i}/noise_weight", f"{s}.apply_noise.weight"),
                Rule(f"convs/{i}/noise", f"{s}.apply_noise.noise", nchw),
                Rule(f"convs/{i}/style/weight", f"{s}.style.weight", dense),
                Rule(f"convs/{i}/style/bias", f"{s}.style.bias"),
            ]
            if i > 0 and i % 2 == 0:
                ignored.append(f"{s}.blur.kernel")
        r += [
            Rule("torgb/weight", f"synthesis.output{last}.weight", conv),
            Rule("torgb/bias", f"synthesis.output{last}.bias"),
        ]
        ignored += ["synthesis.lod"] + [f"synthesis.output{k}.{p}" for k in range(last) for p in ("weight", "bias")]
    elif family == "stylegan2":
        r += _mapping_rules(config)
        r.append(Rule("const", "synthesis.early_layer.const", nchw))
        for i in range(2 * log2 - 3):
            s = f"synthesis.layer{i}"
            r += [
                Rule(f"convs/{i}/weight", f"{s}.weight", conv),
                Rule(f"convs/{i}/bias", f"{s}.bias"),
                Rule(f"convs/{i}/noise", f"{s}.noise", nchw),
                Rule(f"convs/{i}/noise_strength", f"{s}.noise_strength"),
                Rule(f"convs/{i}/style/weight", f"{s}.style.weight", dense),
                Rule(f"convs/{i}/style/bias", f"{s}.style.bias"),
            ]
            if i % 2 == 1:
                ignored.append(f"{s}.filter.kernel")
        for k in range(log2 - 1):
            s = f"synthesis.output{k}"
            r += [
                Rule(f"torgbs/{k}/weight", f"{s}.weight", conv),
                Rule(f"torgbs/{k}/bias", f"{s}.bias"),
                Rule(f"torgbs/{k}/style/weight", f"{s}.style.weight", dense),
                Rule(f"torgbs/{k}/style/bias", f"{s}.style.bias"),
            ]
        ignored.append("synthesis.upsample.kernel")
    else:
        raise CheckpointError(f"no genforce key map for family {family!r}; known: {list(FAMILIES)}")
    return r, ignored


# ---- the converter ----------------------------------------------------------------------


def _check_lod(sd):
    for key in ("lod", "synthesis.lod"):
        if key in sd and not isinstance(sd[key], tuple) and float(np.asarray(sd[key])) != 0.0:
            raise CheckpointError(
                f"{key} = {float(np.asarray(sd[key]))}: the checkpoint was saved while growing progressively; "
                "only fully grown networks (lod 0) are supported"
            )


def _resolve(sd: Mapping, family: str | None, config: dict | None) -> tuple[str, dict]:
    """``(family, config)``: what the keys and shapes say, updated by ``family``/``config``."""
    kind = layout(sd)
    if kind == "rosinality":
        raise _rosinality_error("the state dict")
    if kind == "nvlabs":
        raise _nvlabs_error(sd)
    _check_lod(sd)
    inferred_family, cfg = (kind, infer_config(sd)) if kind in FAMILIES else (None, {})
    family = family or inferred_family
    if family not in FAMILIES or not (cfg or config):
        raise CheckpointError(f"not a genforce PGGAN/StyleGAN/StyleGAN2 state dict ({_describe(sd)})")
    if inferred_family is not None and family != inferred_family:
        raise CheckpointError(
            f"the checkpoint is a genforce {inferred_family} network, but {family} was asked for; "
            f"pass --arch with a {inferred_family} model name (or none)"
        )
    return family, {**cfg, **(config or {})}


def config_for(obj: Any, arch: str | None = None) -> tuple[str, dict]:
    """``(family, config)`` of a read genforce checkpoint (or a bare state dict of arrays or
    shapes), inferred from its keys and shapes; ``arch`` sets the family and overrides."""
    sd = _state_dict(obj, arch)
    family, overrides = common.arch_config(arch) if arch else (None, None)
    return _resolve(sd, family, overrides)


def _hint(sd) -> str:
    try:
        fam, cfg = layout(sd), infer_config(sd)
    except CheckpointError:
        return "the file is not a complete genforce network"
    keys = ("resolution", "z_dim", "w_dim", "mapping_layers", "fmaps_base", "fmaps_max")
    desc = ", ".join(f"{k}={cfg[k]}" for k in keys if k in cfg)
    return f"wrong resolution, channel base or mapping depth; the file looks like a genforce {fam} with {desc}"


def _build(sd: Mapping, family: str, cfg: dict):
    return common.build(
        sd, family, cfg, *rules(family, cfg), what=f"genforce {family} checkpoint", hint=_hint(sd),
        name_mismatched_keys=True,
    )


def from_state_dict(sd: Mapping, family: str | None = None, config: dict | None = None):
    """The Flax generator from a genforce state dict; ``family``/``config`` override what the
    keys and shapes say (``config`` may be partial: it updates the inferred settings)."""
    return _build(sd, *_resolve(sd, family, config))


def to_generator(obj: Any, arch: str | None = None):
    """The converter entry point (see :mod:`convert`)."""
    return _build(_state_dict(obj, arch), *config_for(obj, arch))
