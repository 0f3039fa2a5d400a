"""rosinality stylegan2-pytorch ``.pt`` checkpoints -> :class:`ported_gens.stylegan2.StyleGAN2Rosinality`.

Sources (read by :func:`convert.readers.read_torch`, which never runs code from the file):

- ``train.py``'s checkpoint: ``{"g", "d", "g_ema", "g_optim", "d_optim", "args", "ada_aug_p"}``
  (older revisions lack some). ``args`` is an ``argparse.Namespace``, which the reader's
  allow-list rebuilds as a plain dict (nothing is imported); it is not used.
- ``convert_weight.py``'s file: ``{"g_ema", "latent_avg"}`` (plus ``g`` / ``d`` with
  ``--gen`` / ``--disc``), the layout of the converted official models.
- a bare ``g_ema`` state dict.

Only ``g_ema`` (the averaged weights) is converted, never ``g``. The truncation centre ``w_avg``
is the file's ``latent_avg`` when there is one; otherwise it is estimated as rosinality's
``G.mean_latent(4096)`` does (see :class:`~ported_gens.stylegan2.StyleGAN2RosinalityConfig`, whose
``w_avg_source`` records which).

The configuration is read off the shapes alone: ``size`` from the number of convs,
``style_dim`` / ``n_mlp`` from the mapping, the channel count of every resolution from its
convs (community models change rosinality's table, so it is never assumed);
``channel_multiplier`` is the multiplier whose table that is, else ``None``. ``lr_mlp`` leaves
no trace in the shapes and takes rosinality's default 0.01.

Key map (torch -> Flax; the module structure is the genforce StyleGAN2 port's):

=========================================  ==============================================
``style.{i}.weight|bias`` (i = 1..n_mlp)   ``mapping/layers/{i-1}/weight`` (transposed) ``|bias``
``latent_avg``                             ``w_avg``
``input.input [1,C,4,4]``                  ``const [1,4,4,C]``
``conv1`` / ``convs.{m}``                  ``convs/0`` / ``convs/{m+1}``
``to_rgb1`` / ``to_rgbs.{k}``              ``torgbs/0`` / ``torgbs/{k+1}``
``*.conv.weight [1,out,in,k,k]``           ``weight [k,k,in,out]``; the upsampling convs
                                           (``convs.{even}``) rotated by 180 degrees
``*.conv.modulation.weight|bias``          ``style/weight`` (transposed) ``|bias`` **minus 1**
                                           (rosinality stores the +1 the port adds)
``*.activate.bias`` / ``to_rgb*.bias``     ``bias``
``*.noise.weight [1]``                     ``noise_strength []``
``noises.noise_{c}`` ``[1,1,r,r]``         ``convs/{c}/noise [1,r,r,1]``
``*.blur.kernel``, ``*.upsample.kernel``   not converted: checked to be the [1,3,3,1] filter
=========================================  ==============================================
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from panda_jax.errors import CheckpointError

from . import common, readers
from .transforms import Rule, conv, conv_flipped, dense, minus_one, nchw, scalar, shape_of

NAME = "rosinality"
FAMILIES = ("stylegan2_rosinality",)
DESCRIPTION = "rosinality stylegan2-pytorch .pt"
FAMILY = FAMILIES[0]

# What a generator of rosinality's layout always has (a bare state dict must have them all).
_MARKS = ("input.input", "conv1.conv.weight", "to_rgb1.conv.weight", "style.1.weight")


def is_state_dict(sd: Any) -> bool:
    """Does ``sd`` (arrays or bare shapes) look like a rosinality ``Generator`` state dict?"""
    return isinstance(sd, Mapping) and all(k in sd for k in _MARKS)


def claims(obj) -> bool:
    """train.py's and convert_weight.py's dicts (by their ``g_ema``, or a rosinality ``g``
    without it, so that the error can say what is missing), or a bare generator state dict."""
    if readers.is_record(obj) or not isinstance(obj, Mapping):
        return False
    if "g_ema" in obj:
        return isinstance(obj["g_ema"], Mapping) and any(k in obj["g_ema"] for k in _MARKS)
    if "g" in obj and isinstance(obj["g"], Mapping):
        return is_state_dict(obj["g"])
    return is_state_dict(obj)


def _describe(obj) -> str:
    if isinstance(obj, Mapping):
        keys = [str(k) for k in list(obj)[:8]]
        return f"a dict with keys {keys}{' ...' if len(obj) > 8 else ''}"
    return f"a {type(obj).__name__}"


def unwrap(obj) -> tuple[dict, Any, str]:
    """``(g_ema state dict, latent_avg or None, where)`` of a read rosinality checkpoint."""
    if not isinstance(obj, Mapping) or readers.is_record(obj):
        raise CheckpointError(f"not a rosinality stylegan2-pytorch checkpoint: got {_describe(obj)}")
    if "g_ema" in obj:
        sd, where = obj["g_ema"], "'g_ema'"
        if not isinstance(sd, Mapping):
            raise CheckpointError(
                f"the checkpoint's 'g_ema' is a {type(sd).__name__}, not a state dict; the file is damaged or "
                "not a rosinality train.py / convert_weight.py checkpoint"
            )
    elif "g" in obj and isinstance(obj["g"], Mapping):
        raise CheckpointError(
            "the checkpoint has a generator 'g' but no 'g_ema' (the averaged weights every rosinality release "
            "and train.py checkpoint carries); 'g' is the raw training generator and is not converted. "
            "Give the checkpoint that train.py or convert_weight.py wrote (with 'g_ema')"
        )
    else:
        sd, where = obj, "the state dict"
    latent_avg = obj.get("latent_avg") if sd is not obj else None
    return dict(sd), latent_avg, where


# ---- config inference ---------------------------------------------------------------------


def _indices(sd, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd for m in [rx.fullmatch(k)] if m})


def _need(sd, key: str, rank: int | None = None) -> tuple[int, ...]:
    if key not in sd:
        raise CheckpointError(
            f"the rosinality generator has no {key!r}; the checkpoint is incomplete (a truncated save, or a state "
            "dict of another model). Fix: convert the 'g_ema' that rosinality's train.py or convert_weight.py saved"
        )
    shape = shape_of(sd[key])
    if rank is not None and len(shape) != rank:
        raise CheckpointError(
            f"the rosinality generator's {key!r} has shape {list(shape)}, expected {rank} dimensions; the tensor is "
            "damaged or from another architecture. Fix: convert an unmodified rosinality Generator checkpoint"
        )
    return shape


def _channel_multiplier(size: int, channels: tuple[int, ...]) -> int | None:
    """The ``channel_multiplier`` whose rosinality table is ``channels`` (2 preferred), else None."""
    from ported_gens.stylegan2 import rosinality_channels

    candidates = [2, 1] + ([channels[4] // 256] if len(channels) > 4 and channels[4] >= 256 else [])
    return next((cm for cm in candidates if cm >= 1 and rosinality_channels(size, cm) == channels), None)


def infer_config(sd: Mapping) -> dict:
    """The port's config from a rosinality ``g_ema`` state dict's shapes (arrays or bare shapes)."""
    styles = _indices(sd, r"style\.(\d+)\.weight")
    if not styles or styles != list(range(1, len(styles) + 1)):
        raise CheckpointError(
            f"the rosinality generator's mapping layers are style.{styles}.weight; expected style.1 .. style.N "
            "(style.0 is the PixelNorm). Fix: convert an unmodified rosinality Generator checkpoint"
        )
    style_dim = _need(sd, "style.1.weight", 2)[1]
    convs = _indices(sd, r"convs\.(\d+)\.conv\.weight")
    rgbs = _indices(sd, r"to_rgbs\.(\d+)\.conv\.weight")
    log2 = len(convs) // 2 + 2
    if convs != list(range(len(convs))) or len(convs) % 2 or rgbs != list(range(log2 - 2)) or not 3 <= log2 <= 10:
        raise CheckpointError(
            f"the rosinality generator has convs {convs} and to_rgbs {rgbs}; a size-2^n generator has convs 0 .. "
            "2n-5 and to_rgbs 0 .. n-3 (8 to 1024 px). The checkpoint is incomplete or of another architecture"
        )
    size = 2**log2
    channels = [_need(sd, "conv1.conv.weight", 5)[1]]
    channels += [_need(sd, f"convs.{2 * k + 1}.conv.weight", 5)[1] for k in range(log2 - 2)]
    channels = tuple(int(c) for c in channels)
    return dict(
        size=size,
        style_dim=int(style_dim),
        n_mlp=len(styles),
        channel_multiplier=_channel_multiplier(size, channels),
        channels=channels,
        lr_mlp=0.01,
    )


# ---- key map ------------------------------------------------------------------------------


def _modconv(a):
    """``[1, out, in, k, k] -> [k, k, in, out]``."""
    return conv(a[0] if a.ndim == 5 and a.shape[0] == 1 else a)


def _modconv_flipped(a):
    """As :func:`_modconv`, kernel rotated by 180 degrees (rosinality's upsampling convs run
    ``conv_transpose2d`` on the stored kernel; the port's on the rotated one)."""
    return conv_flipped(a[0] if a.ndim == 5 and a.shape[0] == 1 else a)


def _flat(a):
    """``[1, C, 1, 1] -> [C]`` (ToRGB bias)."""
    return a.reshape(-1) if a.ndim == 4 and a.shape[0] == 1 and a.shape[2:] == (1, 1) else a



def rules(family: str, config: dict) -> tuple[list[Rule], list[str]]:
    """``(rules, torch keys deliberately not converted)`` of a rosinality generator of ``config``.
    ``w_avg`` comes from ``latent_avg`` (the converter supplies an estimate when the file has none)."""
    if family not in FAMILIES:
        raise CheckpointError(f"no rosinality key map for family {family!r}; known: {list(FAMILIES)}")
    log2 = int(config["size"]).bit_length() - 1
    n_mlp = int(config.get("n_mlp", 8))
    r = [Rule("w_avg", "latent_avg"), Rule("const", "input.input", nchw)]
    for i in range(n_mlp):
        r += [Rule(f"mapping/layers/{i}/weight", f"style.{i + 1}.weight", dense),
              Rule(f"mapping/layers/{i}/bias", f"style.{i + 1}.bias")]

    def styled(path, src, c, up):
        return [Rule(f"{path}/weight", f"{src}.conv.weight", _modconv_flipped if up else _modconv),
                Rule(f"{path}/style/weight", f"{src}.conv.modulation.weight", dense),
                Rule(f"{path}/style/bias", f"{src}.conv.modulation.bias", minus_one),
                Rule(f"{path}/bias", f"{src}.activate.bias"),
                Rule(f"{path}/noise_strength", f"{src}.noise.weight", scalar),
                Rule(f"{path}/noise", f"noises.noise_{c}", nchw)]

    def torgb(path, src):
        return [Rule(f"{path}/weight", f"{src}.conv.weight", _modconv),
                Rule(f"{path}/style/weight", f"{src}.conv.modulation.weight", dense),
                Rule(f"{path}/style/bias", f"{src}.conv.modulation.bias", minus_one),
                Rule(f"{path}/bias", f"{src}.bias", _flat)]

    r += styled("convs/0", "conv1", 0, up=False) + torgb("torgbs/0", "to_rgb1")
    ignored = []
    for m in range(2 * (log2 - 2)):
        r += styled(f"convs/{m + 1}", f"convs.{m}", m + 1, up=m % 2 == 0)
        if m % 2 == 0:
            ignored.append(f"convs.{m}.conv.blur.kernel")
    for k in range(log2 - 2):
        r += torgb(f"torgbs/{k + 1}", f"to_rgbs.{k}")
        ignored.append(f"to_rgbs.{k}.upsample.kernel")
    return r, ignored


# ---- the converter ------------------------------------------------------------------------

# rosinality's make_kernel([1, 3, 3, 1]) * factor**2 (upsampling, and the blur after an upsampling conv)
_KERNEL = np.outer([1, 3, 3, 1], [1, 3, 3, 1]).astype(np.float32) / 64 * 4


def _check_kernels(sd: Mapping, ignored: list[str]) -> None:
    for key in ignored:
        if key in sd and not isinstance(sd[key], tuple):
            k = np.asarray(sd[key])
            if k.shape != _KERNEL.shape or not np.allclose(k, _KERNEL, rtol=0, atol=1e-6):
                raise CheckpointError(
                    f"the rosinality generator's {key!r} is not the [1,3,3,1] filter (shape {list(k.shape)}); "
                    "generators built with another blur_kernel are not supported"
                )


def config_for(obj, arch: str | None = None) -> tuple[str, dict]:
    """``("stylegan2_rosinality", config)``: inferred from the shapes; ``arch`` (a family or
    zoo name of this family) overrides, and a disagreement with the file is an error."""
    sd, latent_avg, _ = unwrap(obj)
    cfg = infer_config(sd)
    if arch:
        family, overrides = common.arch_config(arch)
        if family != FAMILY:
            raise CheckpointError(
                f"the checkpoint is a rosinality stylegan2-pytorch generator, but --arch {arch!r} is a {family} "
                f"model; convert it without --arch, or with a rosinality model name (e.g. stylegan2-ffhq-config-f)"
            )
        if "channels" not in overrides and "channel_multiplier" in overrides:
            overrides = dict(overrides, channels=None)
        cfg.update(overrides)
    cfg["w_avg_source"] = "latent_avg" if latent_avg is not None else "mean_latent"
    return FAMILY, cfg


def _hint(sd) -> str:
    try:
        cfg = infer_config(sd)
    except CheckpointError as e:
        return str(e)
    return (f"wrong size, style_dim, n_mlp or channel table; the tensors look like a rosinality generator with "
            f"size={cfg['size']}, style_dim={cfg['style_dim']}, n_mlp={cfg['n_mlp']}, "
            f"channels={list(cfg['channels'])}")


def _check_latent_avg(latent_avg, style_dim: int):
    if not isinstance(latent_avg, np.ndarray) or latent_avg.dtype.kind != "f":
        raise CheckpointError(
            f"the checkpoint's 'latent_avg' is a {type(latent_avg).__name__}, not a float tensor; the file is "
            "damaged. Fix: remove 'latent_avg' (it is then estimated) or convert the original file"
        )
    flat = latent_avg.reshape(-1) if latent_avg.ndim == 2 and latent_avg.shape[0] == 1 else latent_avg
    if flat.shape != (style_dim,):
        raise CheckpointError(
            f"the checkpoint's 'latent_avg' has shape {list(latent_avg.shape)}, expected [{style_dim}] (style_dim); "
            "it belongs to another model. Fix: remove 'latent_avg' (it is then estimated) or convert the original file"
        )
    return flat.astype(np.float32)


def estimate_w_avg(G) -> np.ndarray:
    """rosinality's ``G.mean_latent(4096)``: the mean of ``mapping(z)`` over 4096 standard-normal z,
    drawn with ``numpy.random.RandomState(MEAN_LATENT_SEED)`` (so the estimate is reproducible)."""
    import jax

    from ported_gens.stylegan2 import MEAN_LATENT_SAMPLES, MEAN_LATENT_SEED

    z = np.random.RandomState(MEAN_LATENT_SEED).randn(MEAN_LATENT_SAMPLES, G.z_dim).astype(np.float32)
    w = jax.jit(lambda m, z: m(z))(G.mapping, z)
    return np.asarray(w, np.float64).mean(axis=0).astype(np.float32)


def to_generator(obj: Any, arch: str | None = None):
    """The converter entry point (see :mod:`convert`)."""
    sd, latent_avg, where = unwrap(obj)
    if not any(k in sd for k in _MARKS):
        missing = [k for k in _MARKS if k not in sd]
        raise CheckpointError(
            f"{where} is not a rosinality stylegan2-pytorch generator: it has no {missing} "
            f"(it is {_describe(sd)}); give a train.py or convert_weight.py checkpoint"
        )
    readers.check_weights({k: v for k, v in sd.items()}, f"the rosinality checkpoint ({where})")
    family, cfg = config_for(obj, arch)
    style_dim = int(infer_config(sd)["style_dim"])  # the file's (an --arch of another size fails below, by shape)
    if "latent_avg" in sd:
        raise CheckpointError(f"{where} holds a tensor named 'latent_avg'; that is not a rosinality generator key")
    estimated = latent_avg is None
    avg = np.zeros(style_dim, np.float32) if estimated else _check_latent_avg(latent_avg, style_dim)
    rules_, ignored = rules(family, cfg)
    _check_kernels(sd, ignored)
    G = common.build({**sd, "latent_avg": avg}, family, cfg, rules_, ignored,
                     what=f"rosinality checkpoint ({where})", hint=_hint(sd), name_mismatched_keys=True)
    if estimated:
        import jax.numpy as jnp

        G.w_avg[...] = jnp.asarray(estimate_w_avg(G))
    return G
