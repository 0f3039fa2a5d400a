"""HuggingFace pytorch-pretrained-BigGAN (BigGAN-deep) -> :mod:`ported_gens.biggan`.

Sources: a HuggingFace folder (``config.json`` + ``pytorch_model.bin``, read by
:func:`convert.readers.read_hf_folder`), whose config is checked against the tensor shapes; or a
bare state dict, whose config is inferred from the shapes (upsampling in every second block, the
BigGAN-deep pattern of the 128/256/512 models).

Key map (torch -> Flax; ``sn(p)`` = ``p.weight_orig / (p.weight_u . (W v))`` with
``W = weight_orig.reshape(out, -1)`` and ``v = p.weight_v``, the original's eval-mode spectral
norm, computed once here)::

    embeddings.weight [z, K]                    -> stem/embeddings [K, z]
    generator.gen_z.*  [256 ch, 2z]             -> stem/gen_z/kernel = sn.T, stem/gen_z/bias
    generator.layers.{j}.bn_{k}.scale|offset.*  -> blocks/{j}/bn_{k}/scale|offset = sn.T  [2z, C]
    generator.layers.{j}.bn_{k}.running_means|running_vars -> blocks/{j}/bn_{k}/means|vars [n_stats, C]
    generator.layers.{j}.conv_{0,3}.*           -> blocks/{j}/conv_{k}/kernel = sn[:, :, 0, 0].T, bias
    generator.layers.{j}.conv_{1,2}.*           -> blocks/{j}/conv_{k}/kernel = sn as HWIO, bias
    generator.layers.{a}.snconv1x1_{theta,phi,g,o_conv}.* -> blocks/{a}/{theta,phi,g,o} = sn[:, :, 0, 0].T
    generator.layers.{a}.gamma [1]              -> blocks/{a}/gamma []
    generator.bn.weight|bias|running_means|running_vars -> head/bn/weight|bias|means|vars
    generator.conv_to_rgb.* [ch, ch, 3, 3]      -> head/conv_to_rgb/kernel = sn[:3] as HWIO, bias[:3]

Only the 3 RGB channels of ``conv_to_rgb`` are kept (the original computes ``ch`` and slices);
its spectral norm is taken over the full weight first, as the original does.
"""

from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from panda_jax.errors import CheckpointError, ConfigError
from ported_gens.base import abstract

from . import common
from .transforms import Rule, compose, conv, conv1x1, dense, rgb, scalar, shape_of, spectral_norm, spectral_norm_mismatch

NAME = "biggan"
FAMILIES = ("biggan",)
DESCRIPTION = "HuggingFace BigGAN-deep"

_CONFIG_DEFAULTS = {
    "output_dim": 128,
    "z_dim": 128,
    "class_embed_dim": 128,
    "channel_width": 128,
    "num_classes": 1000,
    "layers": None,  # required
    "attention_layer_position": 8,
    "eps": 1e-4,
    "n_stats": 51,
}
_SN = ("weight_orig", "weight_u", "weight_v")
_ATTN = (("theta", "snconv1x1_theta"), ("phi", "snconv1x1_phi"), ("g", "snconv1x1_g"), ("o", "snconv1x1_o_conv"))


def _sn(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{s}" for s in _SN)


# ---- key map ------------------------------------------------------------------------------

_SN_DENSE = spectral_norm(dense)  # [out, in] -> [in, out]
_SN_1X1 = spectral_norm(conv1x1)  # [out, in, 1, 1] -> [in, out]
_SN_CONV = spectral_norm(conv)  # [out, in, 3, 3] -> HWIO
_SN_RGB = spectral_norm(compose(rgb, conv))  # [ch, in, 3, 3] -> HWIO with the 3 RGB outputs


def rules(family: str, config: Mapping) -> tuple[list[Rule], list[str]]:
    """``(rules, [])`` of a BigGAN-deep of ``config``: every stored tensor is converted."""
    if family not in FAMILIES:
        raise CheckpointError(f"no BigGAN key map for family {family!r}; known: {list(FAMILIES)}")
    r = [
        Rule("stem/embeddings", "embeddings.weight", dense),
        Rule("stem/gen_z/kernel", _sn("generator.gen_z"), _SN_DENSE),
        Rule("stem/gen_z/bias", "generator.gen_z.bias"),
    ]
    j = 0
    for i, _ in enumerate(config["layers"]):
        if i == config["attention_layer_position"]:
            p = f"generator.layers.{j}"
            r += [Rule(f"blocks/{j}/{ours}", _sn(f"{p}.{theirs}"), _SN_1X1) for ours, theirs in _ATTN]
            r.append(Rule(f"blocks/{j}/gamma", f"{p}.gamma", scalar))
            j += 1
        p = f"generator.layers.{j}"
        for k in range(4):
            bn, conv_ = f"{p}.bn_{k}", f"{p}.conv_{k}"
            r += [
                Rule(f"blocks/{j}/bn_{k}/scale", _sn(f"{bn}.scale"), _SN_DENSE),
                Rule(f"blocks/{j}/bn_{k}/offset", _sn(f"{bn}.offset"), _SN_DENSE),
                Rule(f"blocks/{j}/bn_{k}/means", f"{bn}.running_means"),
                Rule(f"blocks/{j}/bn_{k}/vars", f"{bn}.running_vars"),
                Rule(f"blocks/{j}/conv_{k}/kernel", _sn(conv_), _SN_1X1 if k in (0, 3) else _SN_CONV),
                Rule(f"blocks/{j}/conv_{k}/bias", f"{conv_}.bias"),
            ]
        j += 1
    r += [
        Rule("head/bn/weight", "generator.bn.weight"),
        Rule("head/bn/bias", "generator.bn.bias"),
        Rule("head/bn/means", "generator.bn.running_means"),
        Rule("head/bn/vars", "generator.bn.running_vars"),
        Rule("head/conv_to_rgb/kernel", _sn("generator.conv_to_rgb"), _SN_RGB),
        Rule("head/conv_to_rgb/bias", "generator.conv_to_rgb.bias", rgb),
    ]
    return r, []


def _check_sources(rules: list[Rule], shapes: Mapping[str, tuple], what: str) -> None:
    """Every tensor the rules need is there, and every spectral norm's ``u``, ``v`` fit its weight."""
    missing = sorted({k for rule in rules for k in rule.keys if k not in shapes})
    if missing:
        shown = ", ".join(missing[:12]) + (f" (+{len(missing) - 12} more)" if len(missing) > 12 else "")
        raise CheckpointError(
            f"the {what} lacks tensors a BigGAN-deep of its config needs: {shown}. Likely cause: the config "
            "does not belong to these weights, or the file is truncated; use the config.json that came with the weights"
        )
    bad = []
    for rule in rules:
        if len(rule.keys) == 3:  # weight_orig, weight_u, weight_v
            w, u, v = (shapes[k] for k in rule.keys)
            if spectral_norm_mismatch(w, u, v):
                bad.append(f"{rule.keys[0]} {w} with {rule.keys[1]} {u} and {rule.keys[2]} {v}")
    if bad:
        raise CheckpointError(
            f"the {what} has spectral-norm vectors that do not fit their weights: " + "; ".join(bad[:8])
            + ". Fix: the file is damaged or not a pytorch-pretrained-BigGAN checkpoint"
        )


# ---- config -----------------------------------------------------------------------------


def _shape(shapes, key, what):
    if key not in shapes:
        raise CheckpointError(
            f"the {what} has no {key!r}, so it is not a pytorch-pretrained-BigGAN (BigGAN-deep) state dict; "
            "give a HuggingFace BigGAN folder (config.json + pytorch_model.bin) or pass --arch for another family"
        )
    return tuple(shapes[key])


def infer_config(shapes: Mapping[str, tuple], what: str = "checkpoint") -> dict:
    """The constructor config read off the tensor shapes. Upsampling flags are not visible in
    shapes; they follow the BigGAN-deep pattern (every second block), which fixes ``output_dim``."""
    z_dim, num_classes = _shape(shapes, "embeddings.weight", what)
    out, cond_dim = _shape(shapes, "generator.gen_z.weight_orig", what)
    if out % 256 or cond_dim != 2 * z_dim:
        raise CheckpointError(
            f"the {what}'s generator.gen_z.weight_orig is {[out, cond_dim]}; BigGAN-deep expects "
            f"[256 x channel_width, 2 x z_dim = {2 * z_dim}]"
        )
    ch = out // 256
    n_stats = _shape(shapes, "generator.bn.running_means", what)[0]
    layer_keys = [k for k in shapes if k.startswith("generator.layers.")]
    bad = [k for k in layer_keys if not re.fullmatch(r"[0-9]{1,4}", k.split(".")[2] if k.count(".") >= 2 else "")]
    if bad:  # a damaged key name (int() of it was a ValueError)
        raise CheckpointError(f"the {what} has the tensor {bad[0][:80]!r}, not generator.layers.<index>.*; "
                              "the checkpoint is damaged: download it again")
    modules = sorted({int(k.split(".")[2]) for k in layer_keys})
    if modules != list(range(len(modules))):
        raise CheckpointError(f"the {what}'s generator.layers indices {modules} are not 0..{len(modules) - 1}")
    attention = [j for j in modules if f"generator.layers.{j}.snconv1x1_theta.weight_orig" in shapes]
    if len(attention) > 1:
        raise CheckpointError(f"the {what} has self-attention at generator.layers {attention}; BigGAN-deep has one")
    layers = []
    for j in modules:
        if j in attention:
            continue
        c_in = _shape(shapes, f"generator.layers.{j}.bn_0.running_means", what)[1]
        c_out = _shape(shapes, f"generator.layers.{j}.conv_3.weight_orig", what)[0]
        if c_in % ch or c_out % ch:
            raise CheckpointError(
                f"the {what}'s generator.layers.{j} maps {c_in} -> {c_out} channels, not multiples of channel_width {ch}"
            )
        layers.append([len(layers) % 2 == 1, c_in // ch, c_out // ch])
    ups = sum(up for up, _, _ in layers)
    return {
        "output_dim": 4 * 2**ups,
        "z_dim": int(z_dim),
        "class_embed_dim": int(z_dim),
        "channel_width": int(ch),
        "num_classes": int(num_classes),
        "layers": layers,
        "attention_layer_position": attention[0] if attention else len(layers),
        "eps": 1e-4,
        "n_stats": int(n_stats),
    }


def config_from_json(cfg: Mapping, where: str) -> dict:
    """The constructor config from a HuggingFace ``config.json`` (the original's defaults for
    absent fields, unknown fields ignored, as ``BigGANConfig.from_dict`` does)."""
    out = {k: cfg.get(k, v) for k, v in _CONFIG_DEFAULTS.items()}
    layers = out["layers"]
    if layers is None:
        raise CheckpointError(f"{where} has no 'layers' list; restore the config.json that came with the weights")
    if not isinstance(layers, list) or not all(isinstance(b, (list, tuple)) and len(b) == 3 for b in layers):
        raise CheckpointError(
            f"{where} has layers={layers!r}; expected a list of [upsample, in_mult, out_mult]. "
            "Restore the config.json that came with the weights"
        )
    # Checked now, by name, before the comparison with the weights reads the values.
    return common.checked_config("biggan", out, where)


def _attention_at(config: Mapping):
    """The block the attention precedes, or None: the original adds none at other positions."""
    pos, layers = config.get("attention_layer_position"), config.get("layers") or []
    ok = isinstance(pos, int) and not isinstance(pos, bool) and 0 <= pos < len(layers)
    return pos if ok else None


def _differences(a: Mapping, b: Mapping, keys, flags: bool = True) -> list[str]:
    """What differs between two configs in ``keys``; ``flags=False`` leaves the upsampling flags
    out (weights do not show them, so a config.json is not checked against inferred ones)."""
    diffs = []
    for k in keys:
        if k == "attention_layer_position":
            if _attention_at(a) != _attention_at(b):
                diffs.append(f"attention before block {_attention_at(a)} vs {_attention_at(b)} (None: no attention)")
        elif k == "layers":
            la = [[bool(x[0]), int(x[1]), int(x[2])] for x in a[k]]
            lb = [[bool(x[0]), int(x[1]), int(x[2])] for x in b[k]]
            if [x[1:] for x in la] != [x[1:] for x in lb]:
                diffs.append(f"layers (in/out channel multipliers) {[x[1:] for x in la]} vs {[x[1:] for x in lb]}")
            elif flags and [x[0] for x in la] != [x[0] for x in lb]:
                diffs.append(f"layers (upsampling flags) {[x[0] for x in la]} vs {[x[0] for x in lb]}")
        elif a.get(k) != b.get(k):
            diffs.append(f"{k} {a.get(k)!r} vs {b.get(k)!r}")
    return diffs


_SHAPE_KEYS = ("z_dim", "num_classes", "channel_width", "n_stats", "attention_layer_position", "layers")


def _zoo_names_for(config) -> list[str]:
    from ported_gens import zoo

    keys = [k for k in _CONFIG_DEFAULTS if k != "class_embed_dim"]
    return [n for n, (fam, cfg) in zoo.ZOO.items() if fam == "biggan" and cfg and not _differences(cfg, config, keys)]


# ---- the converter ----------------------------------------------------------------------


def _source(obj) -> tuple[dict, str]:
    """``(state dict, what to call it in errors)`` of a HuggingFace folder record or a state dict."""
    if isinstance(obj, dict) and obj.get("kind") == "hf_folder":
        return obj.get("state_dict"), f"checkpoint in {obj.get('path')!r}"
    return obj, "state dict"


def claims(obj) -> bool:
    sd, _ = _source(obj)
    return isinstance(sd, dict) and "generator.gen_z.weight_orig" in sd and "embeddings.weight" in sd


def config_for(obj, arch: str | None = None) -> tuple[str, dict]:
    """``("biggan", config)``: the folder's ``config.json`` checked against the tensor shapes, or
    the config inferred from the shapes of a bare state dict; ``arch`` must agree with it."""
    sd, what = _source(obj)
    inferred = infer_config({k: shape_of(v) for k, v in sd.items()}, what)
    if isinstance(obj, dict) and obj.get("kind") == "hf_folder":
        where = f"{obj.get('path')!r}/config.json"
        config = config_from_json(obj["config"], where)
        diffs = _differences(config, inferred, _SHAPE_KEYS, flags=False)
        if diffs:
            raise CheckpointError(
                f"{where} disagrees with the weights in pytorch_model.bin (config vs weights): "
                + "; ".join(diffs)
                + ". Fix: use the config.json that came with these weights"
            )
    else:
        config = inferred
    if arch:
        expected = common.arch_config(arch)[1]
        diffs = _differences(expected, config, [k for k in expected if k != "class_embed_dim"])
        if diffs:
            match = _zoo_names_for(config)
            fix = f"pass --arch {match[0]} or omit --arch" if match else "omit --arch to use the checkpoint's own config"
            raise CheckpointError(
                f"--arch {arch} does not match this checkpoint ({arch} vs checkpoint): " + "; ".join(diffs) + f". Fix: {fix}"
            )
    return "biggan", config


def to_generator(obj, arch: str | None = None):
    """The Flax BigGAN of a HuggingFace folder record or a bare state dict, every tensor checked."""
    sd, what = _source(obj)
    if not isinstance(sd, dict) or not all(isinstance(v, np.ndarray) for v in sd.values()):
        raise CheckpointError(
            f"expected a BigGAN-deep state dict or HuggingFace folder, got {type(sd).__name__}; "
            "give the folder holding config.json and pytorch_model.bin"
        )
    family, config = config_for(obj, arch)
    try:
        model = abstract(family, config)
    except ConfigError as e:
        raise CheckpointError(f"the {what} has an unusable BigGAN config: {e}") from None
    rs, ignored = rules(family, config)
    _check_sources(rs, {k: shape_of(v) for k, v in sd.items()}, what)
    hint = "a config.json from another BigGAN resolution, or a truncated pytorch_model.bin"
    return common.build(sd, family, config, rs, ignored, what=what, hint=hint, model=model)
