"""StyleGAN3 (T and R): parity with NVlabs' PyTorch model as PandA runs it (test vectors),
conversion from a state dict + init_kwargs.json and from an NVlabs pickle, the full-size key
maps, and the errors users meet."""

import json
import os
import pickle
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import maxabs, nhwc

import _nvlabs_pickle as nv
import convert
import ported_gens
from convert import readers
from convert import stylegan3 as cs
from convert.common import check_keymap, flax_shapes
from convert.transforms import apply_rules
from panda_jax.errors import CheckpointError, FeatureError, LayerError
from ported_gens import zoo
from ported_gens.base import abstract
from ported_gens.stylegan3 import upfirdn2d

# float32 against the float32 original: the README measures up to 2.4e-6 between thread counts
# and 8.2e-6 between float32 and float64 (R); 1e-4 leaves room for another summation order
# (one shared weight per batch instead of per-sample modulated weights, polyphase filtering).
ATOL = 1e-4
CONFIGS = ["stylegan3_t", "stylegan3_r"]
LAYERS = list(range(15))
ERRORS: dict = {}


def check(name, got, want, atol=ATOL):
    err = maxabs(got, want)
    ERRORS[name] = err
    assert np.shape(got) == np.shape(want), (name, np.shape(got), np.shape(want))
    assert err <= atol, f"{name}: max abs error {err:.3g} > {atol}"
    return err


def teardown_module():
    for k, v in ERRORS.items():
        print(f"max-abs {k}: {v:.3g}")


@pytest.fixture(scope="module", params=CONFIGS)
def case(request, testvectors, tmp_path_factory):
    """(name, folder, io arrays, generator converted and loaded back from its directory)."""
    folder = os.path.join(testvectors, request.param)
    with np.load(os.path.join(folder, "io.npz")) as f:
        io = {k: f[k] for k in f.files}
    out = str(tmp_path_factory.mktemp(request.param) / "converted")
    convert.convert(os.path.join(folder, "G_ema.pt"), out)
    return request.param, folder, io, ported_gens.load(out), out


# ---- parity ------------------------------------------------------------------------------


def test_mapping(case):
    name, _, io, G, _ = case
    check(f"{name} ws", G.ws(io["z"]), io["ws"])
    check(f"{name} ws_trunc", G.ws(io["z"], truncation=0.7), io["ws_trunc"])


def test_images(case):
    name, _, io, G, _ = case
    check(f"{name} image", G.generate(io["z"]), nhwc(io["image"]))
    check(f"{name} image_trunc", G.generate(io["z"], truncation=0.7), nhwc(io["image_trunc"]))


def test_features_and_edits_every_layer(case):
    name, _, io, G, _ = case
    assert sorted(G.layers) == LAYERS
    for l in LAYERS:
        Z, ctx = G.features(io["z"], l)
        want = nhwc(io[f"features_l{l}"])
        assert G.layers[l] == want.shape[1:]
        check(f"{name} features_l{l}", Z, want)
        edited = G.render(Z + nhwc(io[f"delta_l{l}"]), l, ctx)
        check(f"{name} edited_l{l}", edited, nhwc(io[f"edited_l{l}"]))


def test_pure_methods_match_inside_jit(case):
    """``_features`` / ``_render`` traced into one caller's jit give the staged numbers."""
    name, _, io, G, _ = case
    graphdef, state = nnx.split(G)

    @jax.jit
    def run(state, z, Z14):
        g = nnx.merge(graphdef, state)
        Z, ctx = g._features(ported_gens.Latents(z), 2, 1.0)
        return Z, g._render(Z14, 14, ctx)

    Z14 = nhwc(io["features_l14"]) + nhwc(io["delta_l14"])
    Z, edited = run(state, jnp.asarray(io["z"]), jnp.asarray(Z14))
    check(f"{name} jit features_l2", Z, nhwc(io["features_l2"]))
    check(f"{name} jit edited_l14", edited, nhwc(io["edited_l14"]))


# ---- conversion --------------------------------------------------------------------------


def test_round_trip(case):
    name, folder, _, G, out = case
    with open(os.path.join(out, "config.json")) as f:
        meta = json.load(f)
    assert meta["family"] == "stylegan3" and meta["source"]["file"] == "G_ema.pt"
    assert meta["source"]["sha256"] == readers.sha256(os.path.join(folder, "G_ema.pt"))
    with open(os.path.join(folder, "init_kwargs.json")) as f:
        kw = json.load(f)
    cfg = G.config
    assert (cfg["channel_base"], cfg["channel_max"], cfg["img_resolution"], cfg["z_dim"]) == (
        kw["channel_base"], kw["channel_max"], kw["img_resolution"], kw["z_dim"])
    assert cfg["conv_kernel"] == kw.get("conv_kernel", 3) and cfg["use_radial_filters"] == kw.get("use_radial_filters", False)
    direct = convert.to_generator(os.path.join(folder, "G_ema.pt"))
    a, b = nnx.to_pure_dict(nnx.state(direct)), nnx.to_pure_dict(nnx.state(G))
    la, lb = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves_with_path(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (p, x), (_, y) in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(p))
    # every stored tensor landed where the key map says, transposed to the Flax layout
    sd = readers.read(os.path.join(folder, "G_ema.pt"))
    shapes = flax_shapes(G)
    params, used, _ = apply_rules(*cs.rules("stylegan3", G.config), sd)
    assert sorted(used) == sorted(sd) and set(params) == set(shapes)
    torgb = G.layer_names[-1]
    np.testing.assert_array_equal(np.asarray(G.synthesis[14].weight[...]), np.transpose(sd[f"synthesis.{torgb}.weight"], (2, 3, 1, 0)))
    np.testing.assert_array_equal(np.asarray(G.mapping.fc[1].kernel[...]), sd["mapping.fc1.weight"].T)


def _pickle_of(folder, tmp_path):
    """An NVlabs network snapshot (.pkl) holding the test-vector weights, built as
    torch_utils.persistence pickles them, with the constructor kwargs stored in it."""
    sd = dict(readers.read(os.path.join(folder, "G_ema.pt")))
    with open(os.path.join(folder, "init_kwargs.json")) as f:
        kwargs = json.load(f)
    kwargs.pop("class_name")
    kwargs["mapping_kwargs"] = nv.EasyDict(kwargs["mapping_kwargs"])
    classes = {"": "Generator", "mapping": "MappingNetwork", "synthesis": "SynthesisNetwork", "synthesis.input": "SynthesisInput"}
    for key in sd:
        parts = key.split(".")
        for i in range(1, len(parts)):
            path = ".".join(parts[:i])
            if path.startswith("synthesis.L") and i == 2:
                classes[path] = "SynthesisLayer"
            elif parts[i - 1] == "affine" or (path.startswith("mapping.fc") and i == 2):
                classes[path] = "FullyConnectedLayer"
    names = sorted({k.split(".")[1] for k in sd if k.startswith("synthesis.L")}, key=lambda n: int(n[1:].split("_")[0]))
    attributes = {"synthesis": {"layer_names": names, "num_ws": 16, "output_scale": 0.25}}
    attributes[f"synthesis.{names[-1]}"] = {"_none_buffers": ("up_filter", "down_filter"), "padding": [0, 0, 0, 0]}
    attributes["synthesis.input"] = {"size": np.broadcast_to(np.asarray(36), [2]), "sampling_rate": np.float64(16.0)}
    source = nv.SOURCE_MARK + "class SynthesisInput(torch.nn.Module):\nclass SynthesisLayer(torch.nn.Module):\n"
    buffers = {"w_avg", "transform", "freqs", "phases", "magnitude_ema", "up_filter", "down_filter"}
    with nv.installed():
        G = nv.from_state_dict(sd, classes, source, buffers, kwargs, attributes)
        data = pickle.dumps(nv.snapshot(G))
    path = tmp_path / "network-snapshot.pkl"
    path.write_bytes(data)
    return str(path), sd


@pytest.mark.parametrize("name", CONFIGS)
def test_convert_nvlabs_pickle(name, testvectors, tmp_path):
    folder = os.path.join(testvectors, name)
    path, sd = _pickle_of(folder, tmp_path)
    rec = readers.read(path)
    assert rec["module"] == "training.networks_stylegan3" and cs.claims(rec)
    flat = readers.state_dict(rec)
    assert list(flat) == list(sd)
    from_pkl = convert.to_generator(path)
    from_pt = convert.to_generator(os.path.join(folder, "G_ema.pt"))
    assert from_pkl.config == from_pt.config
    for (p, x), (_, y) in zip(
        jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(nnx.state(from_pkl))),
        jax.tree_util.tree_leaves_with_path(nnx.to_pure_dict(nnx.state(from_pt))),
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(p))


def test_nvlabs_pickle_converts_without_torch(testvectors, tmp_path):
    """The storages an NVlabs pickle embeds (legacy torch.save bytes) are read by
    convert.torchfree: converting the pickle imports no torch."""
    import subprocess
    import sys

    path, _ = _pickle_of(os.path.join(testvectors, CONFIGS[0]), tmp_path)
    code = ("import sys, convert\n"
            f"G = convert.to_generator({path!r})\n"
            "print('torch' in sys.modules, G.family)\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["False", "stylegan3"], out.stdout


@pytest.mark.parametrize("name", CONFIGS)
def test_bare_state_dict_config_inferred(name, testvectors, tmp_path):
    folder = os.path.join(testvectors, name)
    shutil.copy(os.path.join(folder, "G_ema.pt"), tmp_path / "G_ema.pt")
    obj = readers.read(str(tmp_path / "G_ema.pt"))
    assert getattr(obj, "init_kwargs", None) is None and cs.claims(obj)
    with open(os.path.join(folder, "init_kwargs.json")) as f:
        stored = cs.config_from_init_kwargs(json.load(f))
    inferred = cs.infer_config(obj)
    for k, v in stored.items():
        assert inferred[k] == v, k
    G = convert.to_generator(str(tmp_path / "G_ema.pt"))
    assert G.layer_names == convert.to_generator(os.path.join(folder, "G_ema.pt")).layer_names


def _full(testvectors, name, key="state_dict"):
    with open(os.path.join(testvectors, name, "keys_full.json")) as f:
        full = json.load(f)
    return full, {k: tuple(v["shape"]) for k, v in full[key].items()}


@pytest.mark.parametrize("name,zoo_name", [("stylegan3_t", "stylegan3-t-ffhqu-256x256"), ("stylegan3_r", "stylegan3-r-afhqv2-512x512")])
def test_full_size_key_map(testvectors, name, zoo_name):
    full, shapes = _full(testvectors, name)
    config = cs.config_from_init_kwargs(full["constructor_kwargs"])
    model = abstract("stylegan3", config)
    params, used, _ = apply_rules(*cs.rules("stylegan3", config), shapes)
    assert sorted(used) == sorted(shapes)  # every key of the real architecture is mapped
    check_keymap(model, params, source_keys=shapes, used=used)
    assert list(model.layer_names) == full["layer_names"]
    for l, chw in full["feature_shape_at_layer_CHW"].items():
        assert model.layers[int(l)] == (chw[1], chw[2], chw[0])
    # the zoo name builds the same architecture
    zoo_model = abstract("stylegan3", zoo.config_of(zoo_name))
    assert flax_shapes(zoo_model) == flax_shapes(model)
    # and the layout alone tells the config (zero-size views stand for the tensors)
    views = {k: np.broadcast_to(np.zeros((), np.float32), s) for k, s in shapes.items()}
    inferred = cs.infer_config(views)
    assert flax_shapes(abstract("stylegan3", inferred)) == flax_shapes(model)


def test_panda_loader_channel_base_mismatch(testvectors):
    """PandA builds stylegan3-t-ffhqu-256x256 with channel_base 32768, the pickle has 16384."""
    full, real = _full(testvectors, "stylegan3_t")
    _, panda = _full(testvectors, "stylegan3_t", "state_dict_as_built_by_panda_loader")
    panda_cfg = cs.config_from_init_kwargs(full["panda_load_stylegan3_kwargs"])
    params, used, _ = apply_rules(*cs.rules("stylegan3", panda_cfg), panda)
    check_keymap(abstract("stylegan3", panda_cfg), params, source_keys=panda, used=used)
    params, used, _ = apply_rules(*cs.rules("stylegan3", panda_cfg), real)
    with pytest.raises(CheckpointError, match=r"not filled.*channel base"):
        check_keymap(abstract("stylegan3", panda_cfg), params, source_keys=real, used=used, hint=cs._hint(real, panda_cfg))


# ---- the filters against a direct reference ----------------------------------------------


def _upfirdn_ref(x, f, up, down, pad):
    """NumPy: zero insertion, pad/crop, true 2-D convolution (valid), decimation; NHWC."""
    n, h, w, c = x.shape
    z = np.zeros((n, h * up, w * up, c))
    z[:, ::up, ::up, :] = x
    px0, px1, py0, py1 = pad
    z = np.pad(z, ((0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0)), (0, 0)))
    z = z[:, max(-py0, 0) : z.shape[1] - max(-py1, 0), max(-px0, 0) : z.shape[2] - max(-px1, 0)]
    k = np.outer(f, f) if f.ndim == 1 else f
    k = k[::-1, ::-1] * (up * up)
    oh, ow = z.shape[1] - k.shape[0] + 1, z.shape[2] - k.shape[1] + 1
    y = sum(z[:, a : a + oh, b : b + ow] * k[a, b] for a in range(k.shape[0]) for b in range(k.shape[1]))
    return y[:, ::down, ::down]


@pytest.mark.parametrize(
    "up,down,pad,taps,radial",
    [(4, 1, (19, 18, 19, 18), 24, False), (3, 2, (-3, 5, 2, -1), 9, False), (1, 2, (0, 0, 0, 0), 7, True),
     (2, 2, (1, -2, 0, 3), 5, True)],
)
def test_upfirdn2d_against_reference(up, down, pad, taps, radial):
    rng = np.random.RandomState(up * 100 + taps)
    x = rng.randn(2, 17, 19, 3).astype(np.float32)
    f = rng.randn(taps, taps) if radial else rng.randn(taps)
    got = upfirdn2d(jnp.asarray(x), jnp.asarray(f, jnp.float32), up=up, down=down, padding=pad, gain=up * up)
    want = _upfirdn_ref(x.astype(np.float64), f, up, down, pad)
    assert got.shape == want.shape
    assert maxabs(got, want) <= 1e-4 * max(1.0, float(np.abs(want).max()))


# ---- errors ------------------------------------------------------------------------------


def _sidecar_copy(folder, out_dir, edit=None, drop=None):
    """A copy of the test vectors' G_ema.pt + init_kwargs.json in ``out_dir``, edited."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    sd = {k: torch.as_tensor(v) for k, v in readers.read(os.path.join(folder, "G_ema.pt")).items() if k != drop}
    torch.save(sd, str(out_dir / "G_ema.pt"))
    with open(os.path.join(folder, "init_kwargs.json")) as f:
        kw = json.load(f)
    if edit:
        edit(kw)
    (out_dir / "init_kwargs.json").write_text(json.dumps(kw))
    return str(out_dir / "G_ema.pt")


def test_errors(testvectors, tmp_path):
    folder = os.path.join(testvectors, "stylegan3_t")
    path = _sidecar_copy(
        folder, tmp_path / "unknown", edit=lambda kw: kw.update(use_noise=True, mapping_kwargs={"num_layers": 2, "embed_features": 8})
    )
    with pytest.raises(CheckpointError, match=r"\['mapping_kwargs.embed_features', 'use_noise'\]"):
        convert.to_generator(path)
    path = _sidecar_copy(folder, tmp_path / "cond", edit=lambda kw: kw.update(c_dim=10))
    with pytest.raises(CheckpointError, match="c_dim=10.*class-conditional"):
        convert.to_generator(path)
    path = _sidecar_copy(folder, tmp_path / "other", edit=lambda kw: kw.update(class_name="training.networks_stylegan2.Generator"))
    with pytest.raises(CheckpointError, match="not a StyleGAN3 generator"):
        cs.to_generator(readers.read(path))
    path = _sidecar_copy(folder, tmp_path / "drop", drop="synthesis.L3_36_8.up_filter")
    with pytest.raises(CheckpointError, match=r"not filled: synthesis/3/up_filter"):
        convert.to_generator(path)
    with pytest.raises(CheckpointError, match=r"mapping/w_avg \(checkpoint \(64,\), model \(512,\)\).*channel_base 32768, channel_max 1024"):
        convert.to_generator(os.path.join(folder, "G_ema.pt"), arch="stylegan3-r-ffhqu-256x256")
    cut = tmp_path / "cut.pt"
    cut.write_bytes(open(os.path.join(folder, "G_ema.pt"), "rb").read()[:5000])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        convert.to_generator(str(cut))


def test_transform_warning(testvectors):
    obj = readers.read(os.path.join(testvectors, "stylegan3_t", "G_ema.pt"))
    moved = readers.StateDict(obj)
    moved.init_kwargs = obj.init_kwargs
    moved["synthesis.input.transform"] = np.array([[1, 0, 0.25], [0, 1, 0], [0, 0, 1]], np.float32)
    with pytest.warns(UserWarning, match="input transform is not the identity"):
        G = cs.to_generator(moved)
    np.testing.assert_array_equal(np.asarray(G.input.transform[...]), moved["synthesis.input.transform"])


def test_bad_layer_and_features(case):
    name, _, io, G, _ = case
    with pytest.raises(LayerError, match="0..14"):
        G.features(io["z"], 15)
    Z, ctx = G.features(io["z"], 5)
    with pytest.raises(FeatureError, match=r"expected \[N, 52, 52, 8\]"):
        G.render(Z[:, 1:], 5, ctx)
    with pytest.raises(FeatureError, match="ctx has no 'ws'"):
        G.render(Z, 5, {})
