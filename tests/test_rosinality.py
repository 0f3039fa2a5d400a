"""rosinality stylegan2-pytorch ``.pt`` checkpoints: reading train.py's file (its
``argparse.Namespace`` without running code), converting ``g_ema`` (never the decoy ``g``), the
config read off the shapes (small patched model, full-size key listings), ``latent_avg`` or its
estimate, parity with the test vectors at every layer, the zoo names, bad files, and the
``panda-jax convert`` command end to end.

Parity tolerance: 1e-4 max-abs on every output (the test vectors' own float32-vs-float64 spread
is 2.3e-5). The public methods run one compiled program per conv / ToRGB, so checking every
layer compiles each of them once."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import BIN, assert_close, nhwc

import convert
import ported_gens
from convert import readers, rosinality
from convert.common import check_keymap
from convert.transforms import apply_rules
from panda_jax.errors import CheckpointError, ConfigError
from ported_gens import base, zoo
from ported_gens.stylegan2 import MEAN_LATENT_SAMPLES, MEAN_LATENT_SEED, rosinality_channels

ATOL = 1e-4
FOLDER = "stylegan2_rosinality"


def _cmd(*args):
    cmd = [BIN] if os.path.exists(BIN) else [sys.executable, "-m", "panda_jax.app.cli"]
    return cmd + [str(a) for a in args]


@pytest.fixture(scope="module")
def folder(testvectors):
    return os.path.join(testvectors, FOLDER)


@pytest.fixture(scope="module")
def cli_run(folder, tmp_path_factory):
    """``panda-jax convert checkpoint.pt OUT`` started in the background at the first test that
    asks for it (the command runs while the parity tests run here)."""
    out = str(tmp_path_factory.mktemp("cli") / "converted")
    proc = subprocess.Popen(_cmd("convert", os.path.join(folder, "checkpoint.pt"), out, "--no-samples"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield proc, out
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def io(folder):
    return dict(np.load(os.path.join(folder, "io.npz")))


@pytest.fixture(scope="module")
def train_ckpt(folder):
    return readers.read(os.path.join(folder, "checkpoint.pt"))


@pytest.fixture(scope="module")
def G(cli_run, train_ckpt):
    """g_ema of train.py's checkpoint (no latent_avg there: w_avg is estimated)."""
    return convert.generator_from(train_ckpt)


@pytest.fixture(scope="module")
def G_weights(folder):
    """convert_weight.py's layout: g_ema and latent_avg."""
    return convert.to_generator(os.path.join(folder, "checkpoint_weights_only.pt"))


# ---- reading ----------------------------------------------------------------------------------


def test_train_checkpoint_is_read_without_running_code(folder, train_ckpt):
    path = os.path.join(folder, "checkpoint.pt")
    with pytest.raises(pickle.UnpicklingError, match="argparse.Namespace"):  # what torch alone does
        torch.load(path, weights_only=True)
    assert sorted(train_ckpt) == ["ada_aug_p", "args", "d", "d_optim", "g", "g_ema", "g_optim"]
    args = train_ckpt["args"]
    assert type(args) is dict and args["size"] == 64 and args["channel_multiplier"] == 2 and args["latent"] == 64
    assert "argparse" not in sys.modules or not any(
        isinstance(v, sys.modules["argparse"].Namespace) for v in train_ckpt.values()
    )


def test_other_globals_stay_refused(tmp_path):
    import argparse

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo hacked",))

    for payload, name in [({"args": argparse.Action([], "x")}, "argparse.Action"),
                          ({"args": argparse.Namespace(x=Evil())}, "system")]:
        path = str(tmp_path / "bad.pt")
        torch.save(payload, path)
        with pytest.raises(CheckpointError, match=name):
            readers.read(path)


# ---- configuration ----------------------------------------------------------------------------


def test_config_read_off_the_shapes(folder, G, G_weights):
    with open(os.path.join(folder, "config.json")) as f:
        ref = json.load(f)
    channels = [ref["channels"][str(4 * 2**k)] for k in range(len(ref["channels"]))]
    want = dict(size=64, style_dim=64, n_mlp=4, channel_multiplier=None, channels=channels, lr_mlp=0.01)
    assert G_weights.config == dict(want, w_avg_source="latent_avg")
    assert G.config == dict(want, w_avg_source="mean_latent")
    assert G.family == "stylegan2_rosinality" and G.num_ws == ref["n_latent"]
    assert max(G.layers) == ref["num_layers"]  # l = 0 .. num_layers (the last conv's output included)


def _full(testvectors):
    with open(os.path.join(testvectors, FOLDER, "keys_full.json")) as f:
        j = json.load(f)
    return [("1024 config-f", j, 2), ("256 channel_multiplier 1", j["variants"]["size256_cm1"], 1)]


def test_key_map_covers_the_full_size_models(testvectors):
    for what, j, cm in _full(testvectors):
        shapes = {k: tuple(v["shape"]) for k, v in j["state_dict"].items()}
        family, cfg = rosinality.config_for({"g_ema": shapes, "latent_avg": (512,)})
        kw = j["constructor_kwargs"]
        channels = [j["channels"][str(4 * 2**k)] for k in range(len(j["channels"]))]
        assert cfg == dict(size=kw["size"], style_dim=kw["style_dim"], n_mlp=kw["n_mlp"], channel_multiplier=cm,
                           channels=tuple(channels), lr_mlp=0.01, w_avg_source="latent_avg"), what
        assert tuple(channels) == rosinality_channels(kw["size"], cm)
        model = base.abstract(family, cfg)
        source = dict(shapes, latent_avg=(512,))
        params, used, ignored = apply_rules(*rosinality.rules(family, cfg), source)
        # every Flax parameter filled with the right shape, every torch key used or deliberately left out
        check_keymap(model, params, source_keys=list(source), used=used, ignored=ignored)
        assert sorted(used + ignored) == sorted(source), what
        assert model.num_ws == j["n_latent"] and max(model.layers) == j["num_layers_convs"]
        want = {int(l): (s[1], s[2], s[0]) for l, s in j["feature_shape_at_layer_CHW"].items()}
        assert model.layers == want, what


def test_zoo_names():
    for name, size in [("stylegan2-ffhq-config-f", 1024), ("stylegan2-car-config-f", 512),
                       ("stylegan2-cat-config-f", 256), ("stylegan2-church-config-f", 256),
                       ("stylegan2-horse-config-f", 256), ("stylegan2_car_512", 512), ("stylegan2_ffhq_1024", 1024)]:
        assert zoo.family_of(name) == "stylegan2_rosinality"
        cfg = zoo.config_of(name)
        assert cfg == dict(size=size, style_dim=512, n_mlp=8, channel_multiplier=2)
        base.abstract("stylegan2_rosinality", cfg)  # a valid config


def test_the_full_size_listing_matches_the_ffhq_zoo_entry(testvectors):
    _, j, _ = _full(testvectors)[0]
    shapes = {k: tuple(v["shape"]) for k, v in j["state_dict"].items()}
    family, cfg = rosinality.config_for({"g_ema": shapes, "latent_avg": (512,)}, "stylegan2-ffhq-config-f")
    assert base.abstract(family, cfg).layers == base.abstract(*rosinality.config_for({"g_ema": shapes})).layers
    with pytest.raises(CheckpointError, match="--arch 'stylegan2_ffhq1024' is a stylegan2 model"):
        rosinality.config_for({"g_ema": shapes}, "stylegan2_ffhq1024")


# ---- parity -----------------------------------------------------------------------------------


def test_every_layer_features_skip_resume_and_edit(G, io):
    """features_l, skip_l, resuming unedited (== image) and edited (== edited_l) for l = 0 .. 9."""
    image = nhwc(io["image"])
    assert sorted(G.layers) == list(range(10))
    for l in range(10):
        Z, ctx = G.features(io["z"], l)
        assert_close(f"features_l{l}", Z, nhwc(io[f"features_l{l}"]), ATOL)
        if l >= 2:
            assert_close(f"skip_l{l}", ctx["skip"], nhwc(io[f"skip_l{l}"]), ATOL)
        else:
            assert "skip" not in ctx
        assert_close(f"resumed_l{l}", G.render(Z, l, ctx), image, ATOL)
        # at an odd l the block's ToRGB reads the edited features (rosinality's skip architecture)
        edited = G.render(Z + nhwc(io[f"delta_l{l}"]), l, ctx)
        assert_close(f"edited_l{l}", edited, nhwc(io[f"edited_l{l}"]), ATOL)
    with pytest.raises(ConfigError, match="needs ctx\\['skip'\\]"):
        G.render(Z, 9, {"wp": ctx["wp"]})


def test_images_and_truncation_with_latent_avg(G_weights, io):
    G = G_weights
    np.testing.assert_array_equal(np.asarray(G.w_avg[...]), io["truncation_latent"])  # latent_avg, bit for bit
    assert_close("w", G.mapping(io["z"]), io["w"], 1e-5)
    assert_close("latent", G.wp(io["z"]), io["latent"], 1e-5)
    assert_close("latent_trunc", G.wp(io["z"], 0.7), io["latent_trunc"], 1e-5)
    assert_close("image", G.generate(io["z"]), nhwc(io["image"]), ATOL)
    assert_close("image_trunc", G.generate(io["z"], truncation=0.7), nhwc(io["image_trunc"]), ATOL)


def test_train_checkpoint_converts_g_ema_and_estimates_w_avg(G, io, train_ckpt):
    assert_close("estimated w_avg", G.w_avg[...], io["truncation_latent"], 1e-5)
    assert (MEAN_LATENT_SAMPLES, MEAN_LATENT_SEED) == (4096, 200)  # what the vectors' truncation_latent used
    assert_close("image (train.py g_ema)", G.generate(io["z"]), nhwc(io["image"]), ATOL)
    assert_close("image_trunc (estimated w_avg)", G.generate(io["z"], 0.7), nhwc(io["image_trunc"]), ATOL)
    # the decoy g converted on its own gives another image: the check above tells g_ema from g
    decoy = convert.generator_from({"g_ema": train_ckpt["g"], "latent_avg": io["truncation_latent"]})
    assert float(np.abs(np.asarray(decoy.generate(io["z"])) - nhwc(io["image"])).max()) > 1.0


# ---- bad files --------------------------------------------------------------------------------


def _save(tmp_path, name, g_ema, **extra):
    path = str(tmp_path / name)
    torch.save({"g_ema": {k: torch.from_numpy(np.array(v)) for k, v in g_ema.items()}, **extra}, path)
    return path


@pytest.mark.parametrize("change, words", [
    (lambda sd: sd.pop("convs.5.conv.modulation.bias"), ["model parameters not filled", "convs/6/style/bias"]),
    (lambda sd: sd.pop("noises.noise_3"), ["convs/3/noise"]),
    (lambda sd: sd.pop("conv1.conv.weight"), ["'conv1.conv.weight'", "incomplete", "Fix"]),
    (lambda sd: sd.update({"convs.2.activate.bias": np.zeros(7, np.float32)}), ["shape mismatches", "convs.2.activate.bias"]),
    (lambda sd: sd.update({"style.2.weight": np.zeros((64, 32), np.float32)}), ["shape mismatches", "style.2.weight"]),
    (lambda sd: sd.update({"to_rgbs.1.upsample.kernel": np.ones((4, 4), np.float32)}), ["[1,3,3,1] filter"]),
    (lambda sd: sd.pop("to_rgbs.2.conv.weight"), ["to_rgbs [0, 1, 3]", "incomplete"]),
])
def test_damaged_files_are_refused_with_the_fix(tmp_path, train_ckpt, change, words):
    sd = dict(train_ckpt["g_ema"])
    change(sd)
    path = _save(tmp_path, "bad.pt", sd)
    with pytest.raises(CheckpointError) as e:
        convert.convert(path, str(tmp_path / "out"))
    for w in words:
        assert w in str(e.value), str(e.value)
    assert not (tmp_path / "out").exists()


def test_bad_latent_avg_and_g_without_g_ema(tmp_path, train_ckpt):
    path = _save(tmp_path, "avg.pt", train_ckpt["g_ema"], latent_avg=torch.zeros(512))
    with pytest.raises(CheckpointError, match=r"'latent_avg' has shape \[512\], expected \[64\]"):
        convert.to_generator(path)
    path = str(tmp_path / "g.pt")
    torch.save({"g": {k: torch.from_numpy(np.array(v)) for k, v in train_ckpt["g"].items()}}, path)
    with pytest.raises(CheckpointError, match="no 'g_ema'"):
        convert.to_generator(path)


def test_genforce_arch_names_the_layout(folder):
    with pytest.raises(CheckpointError, match="rosinality stylegan2-pytorch"):
        convert.to_generator(os.path.join(folder, "checkpoint_weights_only.pt"), "stylegan2_ffhq1024")
    with pytest.raises(CheckpointError, match="shape mismatches"):  # the 64 px file is no 1024 px release
        convert.to_generator(os.path.join(folder, "checkpoint_weights_only.pt"), "stylegan2-ffhq-config-f")


def test_cli_refuses_a_damaged_file_in_one_line(tmp_path, train_ckpt, capsys):
    from panda_jax.app.cli import main

    sd = dict(train_ckpt["g_ema"])
    sd.pop("to_rgb1.bias")
    path = _save(tmp_path, "bad.pt", sd)
    capsys.readouterr()
    assert main(["convert", path, str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("panda-jax: error:") and "torgbs/0/bias" in err[0], err


# ---- the command ------------------------------------------------------------------------------


def test_cli_converts_train_checkpoint(cli_run, G, io):
    proc, out = cli_run
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, (stdout, stderr)
    assert "stylegan2_rosinality" in stdout
    loaded = ported_gens.load(out)
    assert loaded.config == G.config and loaded.source["file"] == "checkpoint.pt"
    assert_close("image (converted directory)", loaded.generate(io["z"]), nhwc(io["image"]), ATOL)
