"""NVlabs StyleGAN2 / StyleGAN2-ADA generators -> :class:`ported_gens.stylegan2.StyleGAN2`.

Sources:

- an NVlabs network pickle (``*.pkl`` training snapshot of the stylegan3 or
  stylegan2-ada-pytorch repositories), read by :func:`convert.readers.read_nvlabs_pickle`:
  ``G_ema`` and its stored constructor arguments;
- a state dict (``torch.save(G_ema.state_dict())``) with ``init_kwargs.json`` beside it;
- a bare state dict: the settings are read off the shapes (``conv_clamp`` then defaults to 256,
  what NVlabs' training scripts always pass; it only clamps activations beyond +-256).

The network is the genforce StyleGAN2 generator up to naming and three conventions, so it
becomes the same Flax module (same layer indices, PandA's genforce convention):

==========================================  ==============================================
``mapping.fc{i}.weight|bias``               ``mapping/layers/{i}/weight`` (transposed) ``|bias``
``mapping.w_avg``                           ``w_avg``
``synthesis.b4.const [C,4,4]``              ``const [1,4,4,C]``
``synthesis.b4.conv1``                      ``convs/0``
``synthesis.b{4*2^k}.conv0`` / ``conv1``    ``convs/{2k-1}`` / ``convs/{2k}``
``synthesis.b{4*2^k}.torgb``                ``torgbs/{k}``
layer ``.weight [out,in,k,k]``              ``weight [k,k,in,out]``; conv0 (upsampling) is
                                            flipped: NVlabs runs it with ``flip_weight=False``
layer ``.affine.weight|bias``               ``style/weight`` (transposed) ``|bias`` **minus 1**
                                            (the port adds genforce's constant 1)
layer ``.noise_const [r,r]``                ``noise [1,r,r,1]``; ``noise_strength``, ``bias``
``*.resample_filter``                       not converted: the fixed [1,3,3,1] filter
==========================================  ==============================================

NVlabs' SynthesisLayer weights are not pre-scaled by ``1/sqrt(fan_in)`` and its ToRGB scales the
styles instead of the weight; with demodulation, resp. linearity, both are the same function.
Stored arguments that do not change the float32 forward (``num_fp16_res``,
``fused_modconv_default``, ``w_avg_beta``, ``fp16_channels_last``) are accepted and dropped;
settings the port does not have (conditional ``c_dim``, other architectures, filters or
activations, ``use_noise=False``) are refused by name.
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping

from panda_jax.errors import CheckpointError

from . import common, readers
from .transforms import Rule, chw, conv, conv_flipped, dense, hw, minus_one, shape_of

NAME = "nvlabs_stylegan2"
FAMILIES = ("stylegan2",)
DESCRIPTION = "NVlabs StyleGAN2-ADA"

CLASS_NAMES = ("training.networks_stylegan2.Generator", "training.networks.Generator")
MODULES = ("training.networks_stylegan2", "training.networks")
DEFAULT_CONV_CLAMP = 256.0
DEFAULT_CHANNEL_BASE = 32768  # NVlabs' and genforce's StyleGAN2 default
_DROPPED = {"num_fp16_res", "fused_modconv_default", "w_avg_beta", "fp16_channels_last", "class_name"}
_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


def _source(obj) -> tuple[dict, dict | None, str]:
    """``(state dict, constructor kwargs or None, where they came from)``."""
    return readers.network_source(obj, _POSITIONAL, "an NVlabs StyleGAN2")


def _is_sg2_state_dict(sd: Mapping) -> bool:
    return "synthesis.b4.const" in sd and "mapping.fc0.weight" in sd and "synthesis.b4.conv1.weight" in sd


def claims(obj) -> bool:
    if readers.is_record(obj):
        if obj.get("class_name") != "Generator":
            return False
        if obj.get("module") in MODULES:
            return True
        return _is_sg2_state_dict(readers.state_dict(obj))
    if isinstance(obj, Mapping):
        kw = getattr(obj, "init_kwargs", None)
        if isinstance(kw, dict) and kw.get("class_name") in CLASS_NAMES:
            return True
        return _is_sg2_state_dict(obj)
    return False


def _blocks(sd) -> list[int]:
    return sorted({int(m.group(1)) for k in sd for m in [re.match(r"synthesis\.b(\d+)\.", k)] if m})


def infer_config(sd: Mapping) -> dict:
    """The port's config from an NVlabs StyleGAN2 state dict's keys and shapes (arrays or bare shapes)."""
    blocks = _blocks(sd)
    if not blocks or blocks != [4 * 2**k for k in range(len(blocks))] or not 8 <= blocks[-1] <= 1024:
        raise CheckpointError(f"the NVlabs StyleGAN2 state dict has synthesis blocks {blocks}; expected b4, b8, ... up to 8..1024 px")
    fcs = sorted({int(m.group(1)) for k in sd for m in [re.fullmatch(r"mapping\.fc(\d+)\.weight", k)] if m})
    if not fcs or fcs != list(range(len(fcs))):
        raise CheckpointError(f"the NVlabs StyleGAN2 mapping layers are fc{fcs}; expected fc0 .. fcN-1")
    if "mapping.embed.weight" in sd:
        raise CheckpointError("the NVlabs StyleGAN2 network is class-conditional (mapping.embed); conditional models are not supported")

    def need(key):
        if key not in sd:
            raise CheckpointError(f"the NVlabs StyleGAN2 state dict has no {key!r}; it is incomplete")
        return shape_of(sd[key])

    w_dim = need("mapping.w_avg")[0]
    nf = {r: need(f"synthesis.b{r}.conv1.weight")[0] for r in blocks}
    base, fmax = common.infer_fmaps("stylegan2", nf, DEFAULT_CHANNEL_BASE)
    first = need("mapping.fc0.weight")
    return dict(
        resolution=blocks[-1],
        z_dim=first[1],
        w_dim=w_dim,
        mapping_layers=len(fcs),
        mapping_fmaps=first[0] if len(fcs) > 1 else w_dim,
        mapping_lr_mul=0.01,
        fmaps_base=base,
        fmaps_max=fmax,
        image_channels=need(f"synthesis.b{blocks[-1]}.torgb.weight")[0],
        final_tanh=False,
        conv_clamp=DEFAULT_CONV_CLAMP,
    )


def config_from_init_kwargs(kwargs: dict, where: str) -> dict:
    """The port's config from NVlabs ``Generator`` constructor arguments (flat stylegan3-repo
    form, nested stylegan2-ada form, or legacy.py's form)."""
    kw = dict(kwargs)
    cls = kw.get("class_name")
    if cls is not None and cls not in CLASS_NAMES:
        raise CheckpointError(f"{where}: class_name {cls!r} is not an NVlabs StyleGAN2 generator ({list(CLASS_NAMES)})")
    synth = common.kwargs_group(kw.pop("synthesis_kwargs", None), "synthesis_kwargs", where)
    for k, v in synth.items():
        kw.setdefault(k, v)
    mapping = common.kwargs_group(kw.pop("mapping_kwargs", None), "mapping_kwargs", where)

    def refuse(name, value, want):
        raise CheckpointError(f"{where}: {name} = {value!r} is not supported (only {want!r}); this network cannot be ported")

    checks = {"c_dim": 0, "architecture": "skip", "activation": "lrelu", "use_noise": True, "kernel_size": 3}
    for name, want in checks.items():
        if name in kw and kw[name] != want:
            refuse(name, kw[name], want)
    rf = kw.get("resample_filter", [1, 3, 3, 1])
    if not isinstance(rf, (list, tuple)) or list(rf) != [1, 3, 3, 1]:
        refuse("resample_filter", kw["resample_filter"], [1, 3, 3, 1])
    for name, want in (("activation", "lrelu"), ("embed_features", None)):
        if mapping.get(name, want) != want:
            refuse(f"mapping_kwargs.{name}", mapping[name], want)
    known = set(checks) | {"resample_filter", "z_dim", "w_dim", "img_resolution", "img_channels", "channel_base",
                           "channel_max", "conv_clamp"} | _DROPPED
    unknown = sorted(set(kw) - known)
    unknown += sorted(f"mapping_kwargs.{k}" for k in set(mapping) - {"num_layers", "layer_features", "lr_multiplier",
                                                                      "activation", "embed_features", "w_avg_beta"})
    if unknown:
        raise CheckpointError(f"{where}: unknown StyleGAN2 constructor arguments {unknown}; cannot tell what they change")
    for name in ("z_dim", "w_dim", "img_resolution"):
        if name not in kw:
            raise CheckpointError(f"{where}: the constructor arguments lack {name!r}")
    # The values go to the config class unconverted: it refuses strings, bools, fractions and
    # absurd sizes by name (int("sixty-four") or int(2.5) here would crash or silently change them).
    w_dim = kw["w_dim"]
    return common.checked_config("stylegan2", dict(
        resolution=kw["img_resolution"],
        z_dim=kw["z_dim"],
        w_dim=w_dim,
        mapping_layers=mapping.get("num_layers", 8),
        mapping_fmaps=mapping.get("layer_features") or w_dim,
        mapping_lr_mul=mapping.get("lr_multiplier", 0.01),
        fmaps_base=kw.get("channel_base", DEFAULT_CHANNEL_BASE),
        fmaps_max=kw.get("channel_max", 512),
        image_channels=kw.get("img_channels", 3),
        final_tanh=False,
        conv_clamp=kw.get("conv_clamp"),
    ), where)


# ---- key map ------------------------------------------------------------------------------


def rules(family: str, config: dict) -> tuple[list[Rule], list[str]]:
    """``(rules, torch keys deliberately not converted)`` of an NVlabs StyleGAN2 of ``config``."""
    if family not in FAMILIES:
        raise CheckpointError(f"no NVlabs StyleGAN2 key map for family {family!r}; known: {list(FAMILIES)}")
    log2 = int(math.log2(config["resolution"]))
    r, ignored = [], []
    for i in range(config["mapping_layers"]):
        r += [Rule(f"mapping/layers/{i}/weight", f"mapping.fc{i}.weight", dense),
              Rule(f"mapping/layers/{i}/bias", f"mapping.fc{i}.bias")]
    r += [Rule("w_avg", "mapping.w_avg"), Rule("const", "synthesis.b4.const", chw)]

    def layer(path, src, flip, noise=True):
        out = [Rule(f"{path}/weight", f"{src}.weight", conv_flipped if flip else conv),
               Rule(f"{path}/bias", f"{src}.bias"),
               Rule(f"{path}/style/weight", f"{src}.affine.weight", dense),
               Rule(f"{path}/style/bias", f"{src}.affine.bias", minus_one)]
        if noise:
            out += [Rule(f"{path}/noise", f"{src}.noise_const", hw),
                    Rule(f"{path}/noise_strength", f"{src}.noise_strength")]
        return out

    for k in range(log2 - 1):
        res = 4 * 2**k
        b = f"synthesis.b{res}"
        if k > 0:
            r += layer(f"convs/{2 * k - 1}", f"{b}.conv0", flip=True)
            ignored.append(f"{b}.conv0.resample_filter")
        r += layer(f"convs/{2 * k}", f"{b}.conv1", flip=False)
        r += layer(f"torgbs/{k}", f"{b}.torgb", flip=False, noise=False)
        ignored += [f"{b}.resample_filter", f"{b}.conv1.resample_filter"]
    return r, ignored


# ---- the converter ----------------------------------------------------------------------


def config_for(obj, arch: str | None = None) -> tuple[str, dict]:
    """``("stylegan2", config)`` of a read checkpoint: stored constructor arguments, else
    inferred from the shapes; ``arch`` (a stylegan2 zoo name) overrides."""
    sd, kwargs, where = _source(obj)
    cfg = config_from_init_kwargs(kwargs, where) if kwargs else infer_config(sd)
    if arch:
        family, overrides = common.arch_config(arch)
        if family != "stylegan2":
            raise CheckpointError(f"the checkpoint is an NVlabs StyleGAN2 network, but --arch {arch!r} is a {family} model")
        cfg.update(overrides)
    return "stylegan2", cfg


def _hint(sd) -> str:
    try:
        inferred = infer_config(sd)
    except CheckpointError as e:
        return str(e)
    desc = ", ".join(f"{k}={inferred[k]}" for k in ("resolution", "z_dim", "w_dim", "mapping_layers", "fmaps_base", "fmaps_max"))
    return f"wrong resolution, channel base or mapping depth; the tensors look like an NVlabs StyleGAN2 with {desc}"


def to_generator(obj: Any, arch: str | None = None):
    """The converter entry point (see :mod:`convert`)."""
    sd, _, _ = _source(obj)
    if not _is_sg2_state_dict(sd):
        raise CheckpointError(
            "not an NVlabs StyleGAN2 generator: it has no synthesis.b4.const / synthesis.b4.conv1 / mapping.fc0 "
            "(a StyleGAN3 network has synthesis.input.*; a genforce one synthesis.early_layer.const)"
        )
    family, cfg = config_for(obj, arch)
    return common.build(sd, family, cfg, *rules(family, cfg), what="NVlabs StyleGAN2 checkpoint", hint=_hint(sd))
