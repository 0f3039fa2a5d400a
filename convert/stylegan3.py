"""NVlabs StyleGAN3 (T and R) -> :class:`ported_gens.stylegan3.StyleGAN3`.

Sources:

- an NVlabs network pickle (``stylegan3-*.pkl``, a training snapshot): ``G_ema`` is read by the
  safe unpickler of :mod:`convert.readers`; its stored constructor arguments give the config;
- a state dict (``torch.save(G_ema.state_dict())``) with ``init_kwargs.json`` beside it (the
  arguments of ``training.networks_stylegan3.Generator``, ``class_name`` optional);
- a bare state dict: the config is inferred from the tensor names and shapes (layer names
  ``L{i}_{size}_{channels}`` fix the resolution and the channel base).

Stored arguments that do not change the float32 forward (``num_fp16_res``,
``magnitude_ema_beta``, ``w_avg_beta``) are accepted and dropped; unknown ones are refused.
``--arch`` (a zoo name such as ``stylegan3-r-afhqv2-512x512``) overrides the inferred config.

Key map (torch -> Flax; dense weights transposed to ``[in, out]``, conv weights to HWIO)::

    mapping.fc{i}.weight|bias        -> mapping/fc/{i}/kernel|bias
    mapping.w_avg                    -> mapping/w_avg
    synthesis.input.weight           -> input/kernel
    synthesis.input.affine.*         -> input/affine/kernel|bias
    synthesis.input.transform|freqs|phases -> input/...
    synthesis.L{i}_{s}_{c}.weight    -> synthesis/{i}/weight
    synthesis.L{i}_{s}_{c}.bias|magnitude_ema|up_filter|down_filter -> synthesis/{i}/...
    synthesis.L{i}_{s}_{c}.affine.*  -> synthesis/{i}/affine/kernel|bias
"""

from __future__ import annotations

import re
import warnings

import numpy as np

from panda_jax.errors import CheckpointError
from ported_gens.base import abstract
from ported_gens.stylegan3 import DEFAULTS, synthesis_plan

from . import common, readers
from .transforms import Rule, conv, dense, shape_of

NAME = "stylegan3"
FAMILIES = ("stylegan3",)
DESCRIPTION = "NVlabs StyleGAN3"
CLASS_NAME = "training.networks_stylegan3.Generator"

# NVlabs constructor arguments -> ours (Generator and SynthesisNetwork/SynthesisLayer kwargs).
_SAME = (
    "z_dim", "w_dim", "img_resolution", "img_channels", "channel_base", "channel_max", "num_layers",
    "num_critical", "first_cutoff", "first_stopband", "last_stopband_rel", "margin_size", "output_scale",
    "conv_kernel", "filter_size", "lrelu_upsampling", "use_radial_filters", "conv_clamp",
)
_MAPPING = {"num_layers": "mapping_layers", "lr_multiplier": "mapping_lr_multiplier"}
_NO_EFFECT = ("num_fp16_res", "magnitude_ema_beta")  # training / FP16 settings
_MAPPING_NO_EFFECT = ("w_avg_beta",)
_POSITIONAL = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")
_LAYER_KEY = re.compile(r"^synthesis\.(L(\d+)_(\d+)_(\d+))\.")


def config_from_init_kwargs(kwargs: dict, where: str = "the stored constructor arguments") -> dict:
    """Our constructor config from NVlabs ``Generator`` keyword arguments; unknown ones fail."""
    kwargs = dict(kwargs)
    cls = kwargs.pop("class_name", CLASS_NAME)
    if cls != CLASS_NAME:
        raise CheckpointError(f"{where} are for {cls!r}, not a StyleGAN3 generator ({CLASS_NAME!r}); pass the right --arch")
    kwargs.update(common.kwargs_group(kwargs.pop("synthesis_kwargs", None), "synthesis_kwargs", where))
    mapping = common.kwargs_group(kwargs.pop("mapping_kwargs", None), "mapping_kwargs", where)
    c_dim = kwargs.pop("c_dim", 0)
    if c_dim:
        raise CheckpointError(
            f"{where} have c_dim={c_dim}: a class-conditional StyleGAN3, which is not supported; "
            "convert an unconditional model (c_dim=0)"
        )
    config, unknown = {}, []
    for k, v in kwargs.items():
        if k in _SAME:
            config[k] = v
        elif k not in _NO_EFFECT:
            unknown.append(k)
    for k, v in mapping.items():
        if k in _MAPPING:
            config[_MAPPING[k]] = v
        elif k not in _MAPPING_NO_EFFECT:
            unknown.append(f"mapping_kwargs.{k}")
    if unknown:
        raise CheckpointError(
            f"{where} name StyleGAN3 settings this port does not know: {sorted(unknown)} (known: "
            f"{sorted(_SAME + _NO_EFFECT + tuple('mapping_kwargs.' + k for k in _MAPPING))}); "
            "the file comes from a modified StyleGAN3. Remove them if they do not change the network, "
            "or pass --arch with a matching model name"
        )
    common.checked_config("stylegan3", config, where)  # names each bad value before any inference uses it
    return config


def _layers_in(sd) -> list[tuple[int, str]]:
    found = {}
    for k in sd:
        m = _LAYER_KEY.match(k)
        if m:
            found[int(m.group(2))] = m.group(1)
    return sorted(found.items())


def infer_config(sd) -> dict:
    """The config of a bare StyleGAN3 state dict (arrays or bare shapes), from tensor names and shapes."""

    def shape(k):
        if k not in sd:
            raise CheckpointError(f"the state dict has no {k!r}; it is not a StyleGAN3 generator's (G_ema) state dict")
        return shape_of(sd[k])

    if "mapping.embed.weight" in sd:
        raise CheckpointError("the state dict has mapping.embed: a class-conditional StyleGAN3, which is not supported")
    w_dim, z_dim = shape("mapping.fc0.weight")
    mapping_layers = 0
    while f"mapping.fc{mapping_layers}.weight" in sd:
        mapping_layers += 1
    layers = _layers_in(sd)
    if not layers or [i for i, _ in layers] != list(range(len(layers))):
        raise CheckpointError(
            f"the state dict's synthesis layers are not L0..L{{n}} (found {[n for _, n in layers]}); "
            "it is not a StyleGAN3 G_ema state dict"
        )
    names = [n for _, n in layers]
    sizes = [int(n.split("_")[1]) for n in names]
    chans = [int(n.split("_")[2]) for n in names]
    kernel = shape(f"synthesis.{names[0]}.weight")[-1]
    radial = any(len(shape_of(v)) == 2 for k, v in sd.items() if k.endswith(".down_filter"))
    cfg = dict(
        z_dim=int(z_dim), w_dim=int(w_dim), mapping_layers=mapping_layers, num_layers=len(names) - 1,
        img_resolution=sizes[-1], img_channels=chans[-1], conv_kernel=int(kernel), use_radial_filters=radial,
        channel_max=max(max(chans[:-1]), int(shape("synthesis.input.weight")[0])),
    )
    rate0 = synthesis_plan(dict(cfg, channel_base=cfg["channel_max"]))["input"]["sampling_rate"]
    cfg["margin_size"] = int(round((sizes[0] - rate0) / 2))
    # channel_base: the one (of the usual values and those the narrow layers imply) that
    # reproduces every layer name.
    res = cfg["img_resolution"]
    last = res / 2
    exps = np.minimum(np.arange(cfg["num_layers"] + 1) / (cfg["num_layers"] - DEFAULTS["num_critical"]), 1)
    cutoffs = DEFAULTS["first_cutoff"] * (last / DEFAULTS["first_cutoff"]) ** exps
    powers = [2**k for k in range(4, 21)]
    candidates = powers + sorted({int(round(2 * c * f)) for c, f in zip(chans, cutoffs)} - set(powers))
    for cb in candidates:
        plan = synthesis_plan(dict(cfg, channel_base=cb))
        if [s["name"] for s in plan["layers"]] == names:
            cfg["channel_base"] = cb
            return cfg
    raise CheckpointError(
        f"cannot infer the StyleGAN3 settings from the layer names {names}; put the generator's "
        "init_kwargs.json beside the file, or pass --arch with the model's name (e.g. stylegan3-t-ffhqu-256x256)"
    )


def rules(family: str, config: dict) -> tuple[list[Rule], list[str]]:
    """``(rules, [])`` of a StyleGAN3 of ``config``: every stored tensor is converted."""
    if family not in FAMILIES:
        raise CheckpointError(f"no StyleGAN3 key map for family {family!r}; known: {list(FAMILIES)}")
    cfg = dict(DEFAULTS, **config)
    plan = synthesis_plan(cfg)
    r = [Rule("mapping/w_avg", "mapping.w_avg")]
    for i in range(cfg["mapping_layers"]):
        r += [Rule(f"mapping/fc/{i}/kernel", f"mapping.fc{i}.weight", dense),
              Rule(f"mapping/fc/{i}/bias", f"mapping.fc{i}.bias")]
    r += [Rule("input/kernel", "synthesis.input.weight", dense),
          Rule("input/affine/kernel", "synthesis.input.affine.weight", dense),
          Rule("input/affine/bias", "synthesis.input.affine.bias")]
    r += [Rule(f"input/{b}", f"synthesis.input.{b}") for b in ("transform", "freqs", "phases")]
    for i, spec in enumerate(plan["layers"]):
        src, dst = f"synthesis.{spec['name']}", f"synthesis/{i}"
        r += [Rule(f"{dst}/weight", f"{src}.weight", conv),
              Rule(f"{dst}/affine/kernel", f"{src}.affine.weight", dense)]
        r += [Rule(f"{dst}/{leaf.replace('.', '/')}", f"{src}.{leaf}") for leaf in ("bias", "magnitude_ema", "affine.bias")]
        if spec["up_taps"] > 1:
            r.append(Rule(f"{dst}/up_filter", f"{src}.up_filter"))
        if spec["down_taps"] > 1:
            r.append(Rule(f"{dst}/down_filter", f"{src}.down_filter"))
    return r, []


def _hint(sd, config: dict) -> str:
    have = [n for _, n in _layers_in(sd)]
    want = [s["name"] for s in synthesis_plan(dict(DEFAULTS, **config))["layers"]]
    if have and have != want:
        return (
            f"the file's synthesis layers are {have} but the settings (channel_base {config.get('channel_base', DEFAULTS['channel_base'])}, "
            f"channel_max {config.get('channel_max', DEFAULTS['channel_max'])}, img_resolution {config.get('img_resolution', DEFAULTS['img_resolution'])}) "
            f"give {want}: a different channel base / resolution (the official 256x256 models use channel_base 16384, "
            "R doubles channel_base and channel_max)"
        )
    return "a different StyleGAN3 configuration (T vs R: conv_kernel and radial filters; mapping depth; z/w size)"


def _source(obj):
    """``(state dict, init kwargs or None, where)`` of a read checkpoint."""
    return readers.network_source(obj, _POSITIONAL, "a StyleGAN3")


def claims(obj) -> bool:
    if readers.is_record(obj):
        if obj.get("module") == "training.networks_stylegan3" and obj.get("class_name") == "Generator":
            return True
        return obj.get("class_name") == "Generator" and "synthesis.input.freqs" in readers.state_dict(obj)
    if isinstance(obj, dict):
        kw = getattr(obj, "init_kwargs", None)
        if isinstance(kw, dict) and kw.get("class_name") == CLASS_NAME:
            return True
        return "synthesis.input.freqs" in obj and "mapping.fc0.weight" in obj
    return False


def config_for(obj, arch: str | None = None) -> tuple[str, dict]:
    """``("stylegan3", config)`` of a read checkpoint: stored constructor arguments, else
    inferred from the tensor names and shapes; ``arch`` overrides."""
    sd, kwargs, where = _source(obj)
    config = config_from_init_kwargs(kwargs, where) if kwargs else infer_config(sd)
    if arch:
        config.update(common.arch_config(arch)[1])
    return "stylegan3", config


def to_generator(obj, arch: str | None = None):
    """The converter entry point (see :mod:`convert`)."""
    sd, _, _ = _source(obj)
    family, config = config_for(obj, arch)
    model = abstract(family, config)
    transform = sd.get("synthesis.input.transform")
    if transform is not None and not np.array_equal(np.asarray(transform), np.eye(3, dtype=np.float32)):
        warnings.warn(
            "the stored StyleGAN3 input transform is not the identity; it is kept (PandA resets it to the "
            "identity before sampling)",
            stacklevel=2,
        )
    return common.build(
        sd, family, config, *rules(family, config), what="StyleGAN3 checkpoint", hint=_hint(sd, config), model=model
    )
