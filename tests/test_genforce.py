"""Parity of the genforce PGGAN / StyleGAN / StyleGAN2 ports with the PyTorch reference vectors.

Each family's ``checkpoint.pth`` goes through ``convert.convert`` into a directory and back with
``ported_gens.load``; images (truncated and not), features at every usable layer and edited images
at every layer are compared with ``io.npz`` (NCHW there, NHWC here).

Tolerance: max-abs error <= max(1e-4, 1e-5 * max|reference|). The vectors' README measures the
float32 reference itself at up to 7.9e-5 from float64 (StyleGAN), i.e. ~5e-6 of an array's
largest value; StyleGAN's deepest features reach |x| ~ 21, where two correct float32 computations
differ by ~1e-4.
"""

from __future__ import annotations

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, nhwc

import convert
import ported_gens


def tol(want) -> float:
    return max(1e-4, 1e-5 * float(np.abs(want).max()))


def check(name: str, got, want_nchw):
    want = nhwc(want_nchw)
    assert_close(name, got, want, tol(want))


def load_converted(testvectors, tmp_path_factory, folder):
    src = os.path.join(testvectors, folder, "checkpoint.pth")
    out = str(tmp_path_factory.mktemp(folder) / "converted")
    assert convert.convert(src, out) == out
    G = ported_gens.load(out)
    io = dict(np.load(os.path.join(testvectors, folder, "io.npz")))
    with open(os.path.join(testvectors, folder, "config.json")) as f:
        ref_config = json.load(f)
    return G, io, ref_config


def check_config(G, ref):
    cfg = G.config
    assert cfg["resolution"] == ref["resolution"]
    assert cfg["z_dim"] == ref["z_space_dim"]
    assert cfg["fmaps_base"] == ref["fmaps_base"] and cfg["fmaps_max"] == ref["fmaps_max"]
    if "w_space_dim" in ref:
        assert cfg["w_dim"] == ref["w_space_dim"]
        assert cfg["mapping_layers"] == ref["mapping_layers"]
        assert cfg["mapping_fmaps"] == ref["mapping_fmaps"]
        assert cfg["mapping_lr_mul"] == ref["mapping_lr_mul"]


def edited_and_unedited(G, io, layer, extra=None):
    """Render ``[Z, Z + delta]`` at ``layer`` in one call; returns (Z, unedited, edited)."""
    Z, ctx = G.features(io["z"], layer)
    check(f"features_l{layer}", Z, io[f"features_l{layer}"])
    both = jnp.concatenate([Z, Z + nhwc(io[f"delta_l{layer}"])], axis=0)
    ctx2 = {k: jnp.concatenate([v, v], axis=0) for k, v in ctx.items()}
    img = G.render(both, layer, ctx2)
    n = Z.shape[0]
    return Z, ctx, img[:n], img[n:]


# ---- PGGAN ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pggan(testvectors, tmp_path_factory):
    return load_converted(testvectors, tmp_path_factory, "pggan_genforce")


def test_pggan_converted_config_and_layers(pggan):
    G, io, ref = pggan
    assert G.family == "pggan"
    check_config(G, ref)
    assert G.config["fused_scale"] is False
    assert sorted(G.layers) == [3, 4, 5, 6]
    assert G.source["file"] == "checkpoint.pth" and len(G.source["sha256"]) == 64


def test_pggan_image(pggan):
    G, io, _ = pggan
    check("image", G.generate(io["z"]), io["image"])


@pytest.mark.parametrize("layer", [3, 4, 5, 6])
def test_pggan_features_and_edits(pggan, layer):
    G, io, _ = pggan
    _, _, unedited, edited = edited_and_unedited(G, io, layer)
    check(f"resumed_l{layer} (== image)", unedited, io["image"])
    check(f"edited_l{layer}", edited, io[f"edited_l{layer}"])


def test_pggan_has_no_truncation(pggan):
    G, io, _ = pggan
    with pytest.raises(ValueError, match="no truncation"):
        G.features(io["z"], 3, truncation=0.7)


# ---- StyleGAN ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stylegan(testvectors, tmp_path_factory):
    return load_converted(testvectors, tmp_path_factory, "stylegan_genforce")


def test_stylegan_converted_config_and_layers(stylegan):
    G, io, ref = stylegan
    assert G.family == "stylegan"
    check_config(G, ref)
    assert G.config["fused_scale"] == "auto"
    assert sorted(G.layers) == [3, 4, 5, 6, 7]
    assert G.trunc_layers == 18


def test_stylegan_truncated_images(stylegan):
    """``image`` (psi 1) is what every per-layer test below reproduces through features/render;
    ``generate`` runs the same code with the truncated ``wp``."""
    G, io, _ = stylegan
    np.testing.assert_allclose(np.asarray(G.wp(io["z"], 0.7)), io["wp_trunc"], atol=1e-5)
    check("image_trunc", G.generate(io["z"], truncation=0.7), io["image_trunc"])
    G.trunc_layers = 4
    try:
        np.testing.assert_allclose(np.asarray(G.wp(io["z"], 0.7)), io["wp_trunc_cut4"], atol=1e-5)
        check("image_trunc_cut4", G.generate(io["z"], truncation=0.7), io["image_trunc_cut4"])
    finally:
        G.trunc_layers = 18


@pytest.mark.parametrize("layer", [3, 4, 5, 6, 7])
def test_stylegan_features_and_edits(stylegan, layer):
    G, io, _ = stylegan
    _, ctx, unedited, edited = edited_and_unedited(G, io, layer)
    np.testing.assert_allclose(np.asarray(ctx["wp"]), io["wp"], atol=1e-5)
    check(f"resumed_l{layer} (== image)", unedited, io["image"])
    check(f"edited_l{layer}", edited, io[f"edited_l{layer}"])


# ---- StyleGAN2 --------------------------------------------------------------------------

SG2_LAYERS = list(range(9))


@pytest.fixture(scope="module")
def stylegan2(testvectors, tmp_path_factory):
    return load_converted(testvectors, tmp_path_factory, "stylegan2_genforce")


def test_stylegan2_converted_config_and_layers(stylegan2):
    G, io, ref = stylegan2
    assert G.family == "stylegan2"
    check_config(G, ref)
    assert sorted(G.layers) == SG2_LAYERS
    assert G.layers[8] == (64, 64, 8) and G.layers[0] == (4, 4, 32)
    assert G.trunc_layers == 18 and G.restart_skip is False


def test_stylegan2_truncated_images(stylegan2):
    """``image`` (psi 1) is what every per-layer test below reproduces through features/render;
    ``generate`` runs the same code with the truncated ``wp``."""
    G, io, _ = stylegan2
    np.testing.assert_allclose(np.asarray(G.wp(io["z"], 0.7)), io["wp_trunc"], atol=1e-5)
    check("image_trunc", G.generate(io["z"], truncation=0.7), io["image_trunc"])
    G.trunc_layers = 4
    try:
        np.testing.assert_allclose(np.asarray(G.wp(io["z"], 0.7)), io["wp_trunc_cut4"], atol=1e-5)
        check("image_trunc_cut4", G.generate(io["z"], truncation=0.7), io["image_trunc_cut4"])
    finally:
        G.trunc_layers = 18


@pytest.mark.parametrize("layer", SG2_LAYERS)
def test_stylegan2_features_resume_and_edits(stylegan2, layer):
    """One render call per layer: [Z with the carried skip image, Z + delta and Z with a zero skip
    image]. Continuing from a zero skip image is exactly the original's restart of the skip sum
    (``rgb + upsample(0) == rgb``), so the last two are ``edited_l`` and ``resumed_l``."""
    G, io, _ = stylegan2
    Z, ctx = G.features(io["z"], layer)
    check(f"features_l{layer}", Z, io[f"features_l{layer}"])
    np.testing.assert_allclose(np.asarray(ctx["wp"]), io["wp"], atol=1e-5)
    assert ("skip" in ctx) == (layer > 0)
    batch = jnp.concatenate([Z, Z + nhwc(io[f"delta_l{layer}"]), Z], axis=0)
    ctx3 = {"wp": jnp.concatenate([ctx["wp"]] * 3, axis=0)}
    if layer > 0:
        skip = ctx["skip"]
        ctx3["skip"] = jnp.concatenate([skip, jnp.zeros_like(skip), jnp.zeros_like(skip)], axis=0)
    img = G.render(batch, layer, ctx3)
    n = Z.shape[0]
    check(f"true resume l{layer} (== image)", img[:n], io["image"])
    check(f"edited_l{layer} (skip restarted)", img[n : 2 * n], io[f"edited_l{layer}"])
    check(f"resumed_l{layer} (skip restarted)", img[2 * n :], io[f"resumed_l{layer}"])
    if layer > 0:  # the restart really differs from the true generator here
        assert float(np.abs(np.asarray(img[:n]) - io[f"resumed_l{layer}"].transpose(0, 2, 3, 1)).max()) > 0.1


@pytest.mark.parametrize("layer", [5, 8])
def test_stylegan2_restart_skip_attribute(stylegan2, layer):
    G, io, _ = stylegan2
    Z, ctx = G.features(io["z"], layer)
    both = jnp.concatenate([Z, Z + nhwc(io[f"delta_l{layer}"])], axis=0)
    G.restart_skip = True
    try:
        img = G.render(both, layer, {k: jnp.concatenate([v, v], axis=0) for k, v in ctx.items()})
    finally:
        G.restart_skip = False
    n = Z.shape[0]
    check(f"restart_skip resumed_l{layer}", img[:n], io[f"resumed_l{layer}"])
    check(f"restart_skip edited_l{layer}", img[n:], io[f"edited_l{layer}"])


def test_stylegan2_render_needs_the_skip_image(stylegan2):
    G, io, _ = stylegan2
    Z, ctx = G.features(io["z"], 3)
    with pytest.raises(ValueError, match="skip"):
        G.render(Z, 3, {"wp": ctx["wp"]})
