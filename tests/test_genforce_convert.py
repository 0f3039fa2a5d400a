"""genforce / NVlabs StyleGAN2 conversion: key maps of the full-size models, config inference,
the model zoo names, and the errors for files of another shape or layout. No generator is run
here (abstract models and key maps only), except the NVlabs parity tests at the end."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from helpers import assert_close, nhwc

import convert
import ported_gens
from convert import genforce, nvlabs_stylegan2, readers
from convert.common import check_keymap
from convert.transforms import apply_rules
from panda_jax.errors import CheckpointError, ConfigError
from ported_gens import base, zoo

FULL = {
    "pggan": "pggan_genforce",
    "stylegan": "stylegan_genforce",
    "stylegan2": "stylegan2_genforce",
}


def full_shapes(testvectors, folder):
    with open(os.path.join(testvectors, folder, "keys_full.json")) as f:
        j = json.load(f)
    return j, {k: tuple(v["shape"]) for k, v in j["state_dict"].items()}


def small_state_dict(testvectors, family, which="generator_smooth"):
    ck = readers.read(os.path.join(testvectors, FULL[family], "checkpoint.pth"))
    return dict(ck[which])


@pytest.mark.parametrize("family", sorted(FULL))
def test_key_map_covers_the_full_size_model(testvectors, family):
    j, shapes = full_shapes(testvectors, FULL[family])
    name = j["real_model"]
    inferred_family, inferred = genforce.config_for(shapes)
    assert inferred_family == family
    cfg = zoo.config_of(name)
    assert zoo.family_of(name) == family
    assert {k: inferred[k] for k in cfg} == cfg, "settings read off the keys differ from the zoo entry"
    model = base.abstract(family, cfg)
    params, used, ignored = apply_rules(*genforce.rules(family, cfg), shapes)
    # every Flax parameter filled with the right shape, every torch key used or deliberately left out
    check_keymap(model, params, source_keys=list(shapes), used=used, ignored=ignored)
    assert sorted(used + ignored) == sorted(shapes)
    want = {int(l): (s[1], s[2], s[0]) for l, s in j["feature_shape_at_layer_CHW"].items()}
    assert model.layers == want


def test_nvlabs_key_map_covers_the_full_size_model(testvectors):
    j, shapes = full_shapes(testvectors, "stylegan2_ada_nvlabs")
    kwargs = dict(j["constructor_kwargs"])
    cfg = nvlabs_stylegan2.config_from_init_kwargs(kwargs, "keys_full.json")
    assert cfg == dict(zoo.config_of("stylegan2_ffhq1024"), image_channels=3, final_tanh=False, conv_clamp=256.0)
    inferred = nvlabs_stylegan2.infer_config(shapes)
    assert inferred == cfg
    for form in j["alternative_init_kwargs_forms"].values():  # nested ADA form, legacy.py form
        alt = nvlabs_stylegan2.config_from_init_kwargs(form, "alternative form")
        assert {k: alt[k] for k in cfg if k != "conv_clamp"} == {k: cfg[k] for k in cfg if k != "conv_clamp"}
    model = base.abstract("stylegan2", cfg)
    params, used, ignored = apply_rules(*nvlabs_stylegan2.rules("stylegan2", cfg), shapes)
    check_keymap(model, params, source_keys=list(shapes), used=used, ignored=ignored)
    assert sorted(used + ignored) == sorted(shapes)
    want = {int(l): (s[1], s[2], s[0]) for l, s in j["feature_shape_at_genforce_panda_l_CHW"].items()}
    assert model.layers == want


def test_zoo_has_every_genforce_model_of_the_original():
    names = {
        "pggan": ["celebahq1024", "bedroom256", "livingroom256", "diningroom256", "kitchen256", "church256",
                  "tower256", "bridge256", "restaurant256", "classroom256", "conferenceroom256", "person256",
                  "cat256", "dog256", "bird256", "horse256", "sheep256", "cow256", "car256", "bicycle256",
                  "motorbike256", "bus256", "train256", "boat256", "airplane256", "bottle256", "chair256",
                  "pottedplant256", "tvmonitor256", "diningtable256", "sofa256"],
        "stylegan": ["ffhq1024", "celebahq1024", "bedroom256", "cat256", "car512", "celeba_partial256", "ffhq256",
                     "ffhq512", "livingroom256", "diningroom256", "kitchen256", "apartment256", "church256",
                     "tower256", "bridge256", "restaurant256", "classroom256", "conferenceroom256",
                     "animeface512", "animeportrait512", "artface512"],
        "stylegan2": ["ffhq1024", "church256", "cat256", "horse256", "car512", "afhqdog512", "afhqcat512",
                      "metfaces1024"],
    }
    for family, models in names.items():
        for m in models:
            name = f"{family}_{m}"
            assert zoo.family_of(name) == family
            assert zoo.config_of(name)["resolution"] == int(m[len(m.rstrip("0123456789")):])
    assert zoo.config_of("stylegan2_car512")["fmaps_base"] == 32768
    assert zoo.config_of("pggan_bedroom256")["fmaps_base"] == 16384


@pytest.mark.parametrize(
    "family,arch,keys",
    [
        ("pggan", "pggan_celebahq1024", ["layer0.weight", "convs/0/weight", "convs/10/weight"]),
        ("stylegan", "stylegan_ffhq1024", ["mapping.dense0.weight", "const", "convs/12/conv/weight"]),
        ("stylegan2", "stylegan2_ffhq1024", ["mapping.dense0.weight", "const", "convs/10/weight"]),
    ],
)
def test_zoo_name_of_another_size_names_the_mismatched_keys(testvectors, family, arch, keys):
    src = os.path.join(testvectors, FULL[family], "checkpoint.pth")
    with pytest.raises(CheckpointError) as e:
        convert.to_generator(src, arch)
    msg = str(e.value)
    assert "shape mismatches" in msg and "not filled" in msg
    for key in keys:
        assert key in msg
    assert "fmaps_base=512, fmaps_max=32" in msg  # what the file is


@pytest.mark.parametrize(
    "family,res,missing",
    [
        ("pggan", 128, "model parameters not filled: convs/10/bias, convs/10/weight, convs/11/bias, convs/11/weight"),
        ("stylegan2", 128, "model parameters not filled: convs/10/bias, convs/10/noise, convs/10/noise_strength"),
        ("stylegan2", 32, "checkpoint tensors not used: synthesis.layer7.bias, synthesis.layer7.filter.kernel, synthesis.layer7.noise,"),
    ],
)
def test_wrong_resolution_names_the_mismatched_keys(testvectors, family, res, missing):
    sd = small_state_dict(testvectors, family)
    with pytest.raises(CheckpointError, match="resolution=64") as e:
        genforce.from_state_dict(sd, family, {"resolution": res})
    assert missing in str(e.value)


@pytest.mark.parametrize("family", ["stylegan", "stylegan2"])
def test_wrong_mapping_depth_names_the_keys(testvectors, family):
    sd = small_state_dict(testvectors, family)
    with pytest.raises(CheckpointError, match=r"not used: mapping\.dense6\.bias, mapping\.dense6\.weight, mapping\.dense7"):
        genforce.from_state_dict(sd, family, {"mapping_layers": 6})
    del sd["mapping.dense7.weight"], sd["mapping.dense7.bias"]  # a truncated file, read as 7 layers ...
    assert genforce.infer_config(sd)["mapping_layers"] == 7
    with pytest.raises(CheckpointError, match=r"not filled: mapping/layers/7/bias, mapping/layers/7/weight"):
        genforce.from_state_dict(sd, family, {"mapping_layers": 8})  # ... or forced to 8


def test_generator_smooth_is_preferred(testvectors):
    ck = readers.read(os.path.join(testvectors, "stylegan2_genforce", "checkpoint.pth"))
    sd, which = genforce.unwrap(ck)
    assert which == "generator_smooth"
    G = convert.to_generator(os.path.join(testvectors, "stylegan2_genforce", "checkpoint.pth"))
    smooth = ck["generator_smooth"]["synthesis.early_layer.const"].transpose(0, 2, 3, 1)
    decoy = ck["generator"]["synthesis.early_layer.const"].transpose(0, 2, 3, 1)
    assert np.array_equal(np.asarray(G.const[...]), smooth) and not np.array_equal(smooth, decoy)
    only = genforce.to_generator({"generator": ck["generator"]})
    assert np.array_equal(np.asarray(only.const[...]), decoy)
    bare = genforce.to_generator(dict(ck["generator_smooth"]))
    assert np.array_equal(np.asarray(bare.mapping.layers[3].weight[...]), np.asarray(G.mapping.layers[3].weight[...]))


def test_growing_checkpoint_is_refused(testvectors):
    sd = small_state_dict(testvectors, "pggan")
    sd["lod"] = np.array(0.5, np.float32)
    with pytest.raises(CheckpointError, match="lod = 0.5"):
        genforce.from_state_dict(sd)


def test_arch_of_another_family_is_refused(testvectors):
    src = os.path.join(testvectors, "pggan_genforce", "checkpoint.pth")
    with pytest.raises(CheckpointError, match="genforce pggan network, but stylegan2 was asked for"):
        convert.to_generator(src, "stylegan2_ffhq1024")
    with pytest.raises(ConfigError, match="unknown model name"):
        convert.to_generator(src, "pggan_mars256")


def test_channels_that_follow_no_rule_are_refused():
    assert genforce.infer_fmaps("stylegan2", {4: 512, 8: 512, 16: 256, 32: 128}) == (4096, 512)
    assert genforce.infer_fmaps("stylegan2", {4: 32, 8: 32}) == (32768, 32)  # any base fits: the default
    with pytest.raises(CheckpointError, match="do not follow"):
        genforce.infer_fmaps("pggan", {4: 512, 8: 100, 16: 256})


def test_rosinality_checkpoint_goes_to_its_own_converter(tmp_path):
    """A rosinality generator is convert.rosinality's (tests/test_rosinality.py); asked for as a
    genforce model it is refused by name."""
    g_ema = {"style.1.weight": torch.zeros(8, 8), "input.input": torch.zeros(1, 8, 4, 4),
             "conv1.conv.weight": torch.zeros(1, 8, 8, 3, 3), "to_rgb1.conv.weight": torch.zeros(1, 3, 8, 1, 1)}
    src = str(tmp_path / "550000.pt")
    torch.save({"g_ema": g_ema, "g": g_ema}, src)
    obj = readers.read(src)
    assert not genforce.claims(obj) and convert.converter_for(obj).NAME == "rosinality"
    with pytest.raises(CheckpointError, match="rosinality stylegan2-pytorch") as e:
        convert.to_generator(src, "stylegan2_ffhq1024")
    assert "style.1.weight" in str(e.value)


# ---- NVlabs StyleGAN2-ADA (runs the converted generator) --------------------------------


def check(name, got, want_nchw, atol=1e-4):
    assert_close(name, got, nhwc(want_nchw) if np.ndim(want_nchw) == 4 else want_nchw, atol)


@pytest.fixture(scope="module")
def nvlabs(testvectors, tmp_path_factory):
    folder = os.path.join(testvectors, "stylegan2_ada_nvlabs")
    out = str(tmp_path_factory.mktemp("nvlabs") / "converted")
    convert.convert(os.path.join(folder, "G_ema.pt"), out)  # init_kwargs.json lies beside it
    return ported_gens.load(out), dict(np.load(os.path.join(folder, "io.npz"))), folder


def test_nvlabs_config_from_init_kwargs(nvlabs):
    G, _, folder = nvlabs
    with open(os.path.join(folder, "init_kwargs.json")) as f:
        kw = json.load(f)
    assert G.family == "stylegan2"
    assert G.config == dict(resolution=64, z_dim=64, w_dim=64, mapping_layers=4, mapping_fmaps=64, mapping_lr_mul=0.01,
                            fmaps_base=kw["channel_base"], fmaps_max=kw["channel_max"], image_channels=3,
                            final_tanh=False, conv_clamp=256.0)


def test_nvlabs_images_and_truncation(nvlabs):
    G, io, _ = nvlabs
    check("ws", G.wp(io["z"], 1.0), io["ws"], 1e-5)
    check("ws_trunc", G.wp(io["z"], 0.7), io["ws_trunc"], 1e-5)
    check("image", G.generate(io["z"]), io["image"])
    check("image_trunc", G.generate(io["z"], truncation=0.7), io["image_trunc"])


@pytest.mark.parametrize("layer,act,skip", [(3, "act_b8_conv1", "img_b8"), (8, "act_b64_conv0", "img_b32")])
def test_nvlabs_features_use_genforce_layer_indices(nvlabs, layer, act, skip):
    G, io, _ = nvlabs
    Z, ctx = G.features(io["z"], layer)
    check(f"features_l{layer} ({act})", Z, io[act])
    check(f"skip image at l{layer} ({skip})", ctx["skip"], io[skip])


def test_nvlabs_bare_state_dict_and_pickle_record(testvectors, nvlabs):
    G, _, folder = nvlabs
    sd = dict(readers.read_torch(os.path.join(folder, "G_ema.pt")))
    assert not hasattr(sd, "init_kwargs")
    bare = nvlabs_stylegan2.to_generator(sd)
    assert bare.config == G.config  # shapes alone give the same settings (conv_clamp: NVlabs' 256)

    def nest(flat):
        root = {"kind": readers.NVLABS_RECORD, "class_name": "Generator", "parameters": {}, "buffers": {}, "children": {}}
        for key, value in flat.items():
            node = root
            *path, leaf = key.split(".")
            for p in path:
                node = node["children"].setdefault(p, {"kind": readers.NVLABS_RECORD, "class_name": p,
                                                       "parameters": {}, "buffers": {}, "children": {}})
            node["buffers" if leaf in ("w_avg", "noise_const", "resample_filter") else "parameters"][leaf] = value
        return root

    with open(os.path.join(folder, "init_kwargs.json")) as f:
        kw = json.load(f)
    nested = {"z_dim": 64, "w_dim": 64, "mapping_kwargs": {"num_layers": 4}, "c_dim": 0, "img_resolution": 64,
              "img_channels": 3, "synthesis_kwargs": {"channel_base": kw["channel_base"], "channel_max": kw["channel_max"],
                                                      "num_fp16_res": 0, "conv_clamp": None}}
    record = dict(nest(sd), module="training.networks", init_args=[], init_kwargs=nested)
    assert nvlabs_stylegan2.claims(record) and not genforce.claims(record)
    fromrec = convert.generator_from(record, "stylegan2")  # --arch stylegan2 reaches the NVlabs converter
    assert fromrec.config == dict(G.config, conv_clamp=None)
    for a, b in [(fromrec.convs[3].weight, G.convs[3].weight), (fromrec.torgbs[2].style.bias, G.torgbs[2].style.bias)]:
        assert np.array_equal(np.asarray(a[...]), np.asarray(b[...]))
    # conv0 is flipped, conv1 is not; the affine bias loses genforce's constant 1
    w0 = sd["synthesis.b8.conv0.weight"]
    assert np.array_equal(np.asarray(G.convs[1].weight[...]), w0[:, :, ::-1, ::-1].transpose(2, 3, 1, 0))
    assert np.allclose(np.asarray(G.convs[2].style.bias[...]) + 1, sd["synthesis.b8.conv1.affine.bias"])


@pytest.mark.parametrize(
    "change,match",
    [
        ({"c_dim": 10}, "c_dim = 10"),
        ({"architecture": "resnet"}, "architecture = 'resnet'"),
        ({"mapping_kwargs": {"num_layers": 4, "activation": "relu"}}, "mapping_kwargs.activation"),
        ({"use_fancy_thing": 1}, "unknown StyleGAN2 constructor arguments"),
        ({"class_name": "training.networks_stylegan3.Generator"}, "not an NVlabs StyleGAN2 generator"),
    ],
)
def test_nvlabs_unsupported_settings_are_refused(testvectors, change, match):
    with open(os.path.join(testvectors, "stylegan2_ada_nvlabs", "init_kwargs.json")) as f:
        kw = json.load(f)
    kw.update(change)
    with pytest.raises(CheckpointError, match=match):
        nvlabs_stylegan2.config_from_init_kwargs(kw, "init_kwargs.json")
