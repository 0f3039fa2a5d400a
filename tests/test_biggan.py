"""BigGAN-deep: parity with the original PyTorch model (test vectors), HuggingFace-folder
conversion, the full-size key map, class names, and the errors users meet."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import maxabs, nhwc

import convert
import ported_gens
from convert import biggan as cb
from convert import readers
from convert.common import check_keymap
from convert.transforms import apply_rules
from panda_jax.errors import CheckpointError, ConfigError, FeatureError, LayerError
from ported_gens import zoo
from ported_gens.base import Generator, Latents, abstract
from ported_gens.biggan import BigGANConfig, bn_selection, check_truncation, class_index, class_indices, imagenet_classes

# float32 against the float32 original: the README measures 8.6e-6 between thread counts and
# 1.5e-5 between float32 and float64, so 1e-4 leaves room for a different summation order.
ATOL = 1e-4
LAYERS = list(range(1, 11))


@pytest.fixture(scope="module")
def folder(testvectors):
    return os.path.join(testvectors, "biggan_deep")


@pytest.fixture(scope="module")
def io(folder):
    with np.load(os.path.join(folder, "io.npz")) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def G(folder):
    return convert.to_generator(folder)


@pytest.fixture(scope="module")
def lat(io):
    return Latents(jnp.asarray(io["noise_vector"]), jnp.asarray(io["class_vector"]))


@pytest.fixture(scope="module")
def image(G, lat, io):
    return np.asarray(G.generate(lat, float(io["truncation"])))


# ---- parity with the original -----------------------------------------------------------


def test_config_and_layers_follow_the_folder(G, folder, io):
    with open(os.path.join(folder, "config.json")) as f:
        hf = json.load(f)
    assert G.family == "biggan"
    assert G.config == hf
    assert sorted(G.layers) == LAYERS
    for l in LAYERS:
        assert G.layers[l] == nhwc(io[f"features_l{l}"]).shape[1:], l


@pytest.mark.parametrize(
    "name, z, trunc",
    [
        ("image", "noise_vector", "truncation"),
        ("image_trunc", "noise_vector_trunc", "truncation_trunc"),
        ("image_trunc_interp", "noise_vector_trunc_interp", "truncation_trunc_interp"),
    ],
)
def test_images_match_the_original(G, io, name, z, trunc):
    assert io[trunc].dtype == np.float64  # exact truncation values pick the statistics rows
    img = np.asarray(G.generate(Latents(io[z], io["class_vector"]), float(io[trunc])))
    err = maxabs(img, nhwc(io[name]))
    print(f"{name} (truncation {float(io[trunc])}): max abs error {err:.2e}")
    assert img.shape == (2, 128, 128, 3)
    assert err <= ATOL


@pytest.mark.parametrize("layer", LAYERS)
def test_features_match_the_original(G, lat, io, layer):
    Z, ctx = G.features(lat, layer, truncation=float(io["truncation"]))
    err = maxabs(Z, nhwc(io[f"features_l{layer}"]))
    err_cond = maxabs(ctx["cond"], io["cond_vector"])
    print(f"features_l{layer}: max abs error {err:.2e}; cond_vector {err_cond:.2e}")
    assert Z.shape == nhwc(io[f"features_l{layer}"]).shape
    assert err <= ATOL
    assert err_cond <= ATOL


@pytest.mark.parametrize("layer", LAYERS)
def test_edited_images_match_the_original(G, lat, io, layer):
    Z, ctx = G.features(lat, layer)
    edited = np.asarray(G.render(Z + nhwc(io[f"delta_l{layer}"]), layer, ctx))
    err = maxabs(edited, nhwc(io[f"edited_l{layer}"]))
    print(f"edited_l{layer}: max abs error {err:.2e}")
    assert err <= ATOL


def test_resuming_keeps_the_truncation_and_batches_may_mix_them(G, lat, io, image):
    t = float(io["truncation_trunc_interp"])
    want = np.asarray(G.generate(lat, t))
    Z, ctx = G.features(lat, 6, truncation=t)
    assert maxabs(G.render(Z, 6, ctx), want) == 0.0
    Z1, ctx1 = G.features(lat, 6, truncation=1.0)
    mixed = {k: jnp.concatenate([ctx1[k][:1], ctx[k][1:]]) for k in ctx}
    out = np.asarray(G.render(jnp.concatenate([Z1[:1], Z[1:]]), 6, mixed))
    assert maxabs(out[0], image[0]) == 0.0 and maxabs(out[1], want[1]) == 0.0
    assert maxabs(want, image) > 0.05  # the truncation matters


def test_base_contract_one_program_paths(G, lat, io):
    """``_features``/``_render`` as the base class jits them (one program, static truncation)."""
    Z, ctx = Generator.features(G, lat, 2, truncation=1.0)
    assert maxabs(Z, nhwc(io["features_l2"])) <= ATOL
    assert maxabs(ctx["cond"], io["cond_vector"]) <= ATOL
    edited = Generator.render(G, jnp.asarray(nhwc(io["features_l9"] + io["delta_l9"])), 9, ctx)
    assert maxabs(edited, nhwc(io["edited_l9"])) <= ATOL


def test_batch_norm_rows_follow_the_original():
    # README: 1.0 -> row 50; 0.7 -> row 35; 0.405 -> coef 0.25 on row 20 (reversed weights).
    assert bn_selection(1.0, 51) == ((50, 50), (1.0, 0.0))
    assert bn_selection(0.7, 51) == ((35, 36), (1.0, 0.0))
    rows, (w0, w1) = bn_selection(0.405, 51)
    assert rows == (20, 21) and w0 == pytest.approx(0.25, abs=1e-9) and w1 == pytest.approx(0.75, abs=1e-9)
    # The float32 value of 0.7 selects other rows; this is why truncation is resolved in float64,
    # and a float32 truncation is read as the decimal it was written as.
    assert bn_selection(float(np.float32(0.7)), 51)[0] == (34, 35)
    assert check_truncation(np.float32(0.7)) == 0.7 and check_truncation(jnp.float32(0.405)) == 0.405
    assert check_truncation(np.float64(0.7)) == 0.7 and check_truncation(1) == 1.0
    for bad in ("0.7", [0.7], True):
        with pytest.raises(ConfigError, match="not a number"):
            check_truncation(bad)
    with pytest.raises(ConfigError, match="traced"):
        jax.jit(check_truncation)(0.7)


# ---- inputs and errors ------------------------------------------------------------------


def test_a_bare_z_is_refused_with_the_fix(G, io):
    for call in (
        lambda: G.generate(io["z"]),
        lambda: G.features(io["z"], 3),
        lambda: G.generate(Latents(io["z"])),
    ):
        with pytest.raises(ConfigError, match=r"Latents\(z, classes\)"):
            call()


def test_bad_inputs_are_refused(G, lat, io):
    with pytest.raises(ConfigError, match="outside"):
        G.generate(lat, 1.5)
    with pytest.raises(ConfigError, match="outside"):
        G.features(lat, 3, truncation=0.0)
    with pytest.raises(ConfigError, match=r"\[N, 128\]"):
        G.generate(Latents(io["z"][:, :64], io["class_vector"]))
    with pytest.raises(ConfigError, match="classes have shape"):
        G.generate(Latents(io["z"], io["class_vector"][:, :10]))
    with pytest.raises(LayerError):
        G.features(lat, 0)
    with pytest.raises(LayerError):
        G.features(lat, 11)
    Z, ctx = G.features(lat, 4)
    with pytest.raises(ConfigError, match="ctx"):
        G.render(Z, 4, {"cond": ctx["cond"]})
    with pytest.raises(FeatureError, match="layer 6"):
        G.render(Z, 6, ctx)  # layer 4's Z is 16x16, layer 6 takes 32x32


def test_class_indices_give_the_original_class_vectors(G, io):
    lat = Latents(io["z"], jnp.asarray(io["class_index"].astype(np.int32)))
    assert maxabs(G.features(lat, 1)[1]["cond"], io["cond_vector"]) <= ATOL
    onehot = jax.nn.one_hot(class_indices([int(i) for i in io["class_index"]], 2), 1000)
    assert np.array_equal(np.asarray(onehot), io["class_vector"])


def test_sample_latents(G):
    key = jax.random.key(0)
    a = G.sample_latents(key, 2, classes="red fox")
    assert isinstance(a, Latents) and a.z.shape == (2, 128) and a.classes.shape == (2, 1000)
    assert np.array_equal(np.argmax(np.asarray(a.classes), 1), [277, 277])
    assert np.array_equal(np.asarray(a.classes).sum(1), [1.0, 1.0])
    assert float(jnp.max(jnp.abs(a.z))) <= 2.0
    half = G.sample_latents(key, 2, classes="red fox", truncation=0.5)
    assert np.array_equal(np.asarray(half.z), 0.5 * np.asarray(a.z))
    assert not np.array_equal(np.asarray(G.sample_latents(jax.random.key(1), 2, classes=277).z), np.asarray(a.z))
    mixed = G.sample_latents(key, 2, classes=["goldfish", 705])
    assert np.array_equal(np.argmax(np.asarray(mixed.classes), 1), [1, 705])
    rand = G.sample_latents(key, 64)
    assert len(set(np.argmax(np.asarray(rand.classes), 1).tolist())) > 30
    img = G.generate(a)
    assert img.shape == (2, 128, 128, 3) and bool(jnp.all(jnp.abs(img) <= 1.0))
    with pytest.raises(ConfigError, match="2 samples"):
        G.sample_latents(key, 2, classes=[1, 2, 3])
    with pytest.raises(ConfigError, match="outside 0..999"):
        G.sample_latents(key, 2, classes=1000)
    with pytest.raises(ConfigError, match="outside"):
        G.sample_latents(key, 2, truncation=2.0)


def test_class_names():
    assert class_index("red fox") == 277
    assert class_index("Vulpes_vulpes") == 277  # a synonym, underscores for spaces
    assert class_index("n02119022") == 277  # WordNet id
    assert class_index("GOLDFISH") == 1
    classes = imagenet_classes()
    wnids = [w for w, _ in classes]
    assert len(classes) == 1000 and wnids == sorted(set(wnids))  # ImageNet order = sorted WordNet ids
    assert classes[0][1][0] == "tench" and classes[999][1][0] == "toilet tissue"
    with pytest.raises(ConfigError, match=r"'red fox' \(277\)"):
        class_index("fox")  # PandA resolves this through WordNet hyponyms; here it lists them
    with pytest.raises(ConfigError, match="goldfish"):
        class_index("goldfsh")
    with pytest.raises(ConfigError, match=r"ambiguous.*\(134\).*\(517\)"):
        class_index("crane")


# ---- conversion -------------------------------------------------------------------------


def test_key_map_covers_the_full_size_checkpoint(folder):
    with open(os.path.join(folder, "keys_full.json")) as f:
        full = json.load(f)
    cfg = full["constructor_kwargs"]
    shapes = {k: tuple(v["shape"]) for k, v in full["state_dict"].items()}
    assert len(shapes) == full["num_tensors"] == 602
    assert cb.infer_config(shapes) == cfg
    assert zoo.config_of("biggan-deep-256") == cfg and zoo.config_of("biggan") == cfg
    model = abstract("biggan", cfg)
    params, used, _ = apply_rules(*cb.rules("biggan", cfg), shapes)
    check_keymap(model, params, source_keys=shapes, used=used)  # raises on any gap or mismatch
    assert set(used) == set(shapes)
    for l, chw in full["feature_shape_at_layer_CHW"].items():
        c, h, w = chw
        assert model.layers[int(l)] == (h, w, c)
    # the other zoo models build, with the expected resolutions
    for name, res in (("biggan-deep-128", 64), ("biggan-deep-512", 256)):
        m = abstract("biggan", zoo.config_of(name))
        assert m.layers[max(m.layers)][:2] == (res, res), name


def test_round_trip_through_a_converted_directory(G, folder, lat, image, tmp_path):
    out = convert.convert(folder, str(tmp_path / "bg"))
    G2 = ported_gens.load(out)
    assert G2.family == "biggan" and G2.config == G.config
    assert G2.source["file"] == "biggan_deep"
    a = nnx.to_pure_dict(nnx.state(G))
    b = nnx.to_pure_dict(nnx.state(G2))
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(lambda x, y: np.array_equal(x, y), a, b))
    assert np.array_equal(np.asarray(G2.generate(lat)), image)


def test_a_bare_state_dict_and_a_legacy_format_bin_convert_too(G, folder, lat, image, tmp_path):
    import torch
    G3 = convert.to_generator(os.path.join(folder, "pytorch_model.bin"))  # config from the shapes
    assert G3.config == G.config
    sd = torch.load(os.path.join(folder, "pytorch_model.bin"), weights_only=True)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save(sd, legacy / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    shutil.copy(os.path.join(folder, "config.json"), legacy / "config.json")
    assert open(legacy / "pytorch_model.bin", "rb").read(2) != b"PK"
    G4 = convert.to_generator(str(legacy))
    assert np.array_equal(np.asarray(G4.generate(lat)), image)


def test_arch_must_match_the_checkpoint(folder):
    with pytest.raises(CheckpointError, match=r"channel_width 128 vs 4.*omit --arch"):
        convert.to_generator(folder, arch="biggan")


def _folder_with(tmp_path, src, *, config=None, bin_bytes=None, files=("config.json", "pytorch_model.bin")):
    d = tmp_path / "hf"
    d.mkdir()
    for name in files:
        shutil.copy(os.path.join(src, name), d / name)
    if config is not None:
        (d / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if bin_bytes is not None:
        (d / "pytorch_model.bin").write_bytes(bin_bytes)
    return str(d)


def test_missing_files_are_named(folder, tmp_path):
    d = _folder_with(tmp_path, folder, files=("config.json",))
    with pytest.raises(CheckpointError, match="has no pytorch_model.bin"):
        convert.to_generator(d)
    os.remove(os.path.join(d, "config.json"))
    shutil.copy(os.path.join(folder, "pytorch_model.bin"), d)
    with pytest.raises(CheckpointError, match="no config.json"):
        readers.read(d)


def test_corrupt_files_are_reported(folder, tmp_path):
    data = open(os.path.join(folder, "pytorch_model.bin"), "rb").read()
    d = _folder_with(tmp_path, folder, bin_bytes=data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"pytorch_model.bin.*not a readable PyTorch checkpoint"):
        convert.to_generator(d)
    (tmp_path / "hf" / "pytorch_model.bin").write_bytes(data)
    (tmp_path / "hf" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        convert.to_generator(d)


def test_a_config_that_disagrees_with_the_weights_is_reported(folder, tmp_path):
    with open(os.path.join(folder, "config.json")) as f:
        good = json.load(f)
    cases = [
        (dict(good, channel_width=8), r"disagrees with the weights.*channel_width 8 vs 4"),
        (dict(good, layers=good["layers"][:-2] + [[False, 2, 2], [True, 2, 1]] * 2), r"layers"),
        (dict(good, n_stats=41), r"n_stats 41 vs 51"),
        (dict(good, layers=[[True, 16]]), r"expected a list of \[upsample, in_mult, out_mult\]"),
        ([good], r"holds a JSON list"),
    ]
    for i, (cfg, msg) in enumerate(cases):
        sub = tmp_path / str(i)
        sub.mkdir()
        d = _folder_with(sub, folder, config=cfg)
        with pytest.raises(CheckpointError, match=msg):
            convert.to_generator(d)


def test_missing_and_misshapen_tensors_are_listed(G, folder, tmp_path):
    obj = readers.read(folder)
    sd = dict(obj["state_dict"])
    del sd["generator.layers.3.conv_1.weight_v"]
    with pytest.raises(CheckpointError, match=r"generator\.layers\.3\.conv_1\.weight_v"):
        cb.to_generator(dict(obj, state_dict=sd))
    sd = dict(obj["state_dict"])
    sd["generator.layers.3.bn_2.running_means"] = sd["generator.layers.3.bn_2.running_means"][:, :5]
    with pytest.raises(CheckpointError, match=r"blocks/3/bn_2/means"):
        cb.to_generator(dict(obj, state_dict=sd))
    sd = dict(obj["state_dict"], extra_tensor=np.zeros(3, np.float32))
    with pytest.raises(CheckpointError, match="extra_tensor"):
        cb.to_generator(dict(obj, state_dict=sd))


# ---- every config the original builds ---------------------------------------------------
# The original (pytorch_pretrained_biggan/model.py) floors channel counts: GenBlock's bottleneck is
# in_size // 4, SelfAttn's projections in_channels // 8 and // 2; it ignores output_dim and
# class_embed_dim, tests the upsampling flag only for truth, and adds no attention when
# attention_layer_position is no block index. Zero-channel convolutions fail in its spectral norm.


def _original_shapes(cfg: dict) -> dict[str, tuple]:
    """The original BigGAN's state-dict keys and shapes for ``cfg`` (a HuggingFace config dict)."""
    ch, z, n = cfg["channel_width"], cfg["z_dim"], cfg["n_stats"]
    shapes = {"embeddings.weight": (z, cfg["num_classes"])}

    def sn(key, out, *rest, bias=True):
        shapes[f"{key}.weight_orig"] = (out, *rest)
        shapes[f"{key}.weight_u"] = (out,)
        shapes[f"{key}.weight_v"] = (int(np.prod(rest)),)
        if bias:
            shapes[f"{key}.bias"] = (out,)

    sn("generator.gen_z", 4 * 4 * 16 * ch, 2 * z)
    j = 0
    for i, (_, a, b) in enumerate(cfg["layers"]):
        p = f"generator.layers.{j}"
        if i == cfg["attention_layer_position"]:
            c = ch * a
            for name, out, cin in (("theta", c // 8, c), ("phi", c // 8, c), ("g", c // 2, c), ("o_conv", c, c // 2)):
                sn(f"{p}.snconv1x1_{name}", out, cin, 1, 1, bias=False)
            shapes[f"{p}.gamma"] = (1,)
            j += 1
            p = f"generator.layers.{j}"
        cin, cout = ch * a, ch * b
        mid = cin // 4
        for k, (c_bn, c_out, c_in, size) in enumerate(
            ((cin, mid, cin, 1), (mid, mid, mid, 3), (mid, mid, mid, 3), (mid, cout, mid, 1))
        ):
            shapes[f"{p}.bn_{k}.running_means"] = shapes[f"{p}.bn_{k}.running_vars"] = (n, c_bn)
            sn(f"{p}.bn_{k}.scale", c_bn, 2 * z, bias=False)
            sn(f"{p}.bn_{k}.offset", c_bn, 2 * z, bias=False)
            sn(f"{p}.conv_{k}", c_out, c_in, size, size)
        j += 1
    for name in ("running_means", "running_vars"):
        shapes[f"generator.bn.{name}"] = (n, ch)
    shapes["generator.bn.weight"] = shapes["generator.bn.bias"] = (ch,)
    sn("generator.conv_to_rgb", ch, ch, 3, 3)
    return shapes


def _original_state_dict(cfg: dict, seed: int = 0) -> dict:
    """Random torch tensors of the original's shapes: spectral-norm ``u``, ``v`` converged (the top
    singular vectors), positive variances, attention gamma 0.8."""
    import torch

    rng = np.random.default_rng(seed)
    shapes = _original_shapes(cfg)
    sd = {}
    for key, shape in shapes.items():
        if key.endswith("weight_orig"):
            w = rng.standard_normal(shape).reshape(shape[0], -1)
            u, _, vt = np.linalg.svd(w, full_matrices=False)
            base = key[: -len("weight_orig")]
            sd[key] = w.reshape(shape)
            sd[base + "weight_u"], sd[base + "weight_v"] = u[:, 0], vt[0]
        elif key.endswith(("weight_u", "weight_v")):
            continue
        elif key.endswith("running_vars"):
            sd[key] = 0.5 + rng.random(shape)
        elif key.endswith("gamma"):
            sd[key] = np.full(shape, 0.8)
        else:
            sd[key] = 0.5 * rng.standard_normal(shape)
    return {k: torch.tensor(np.asarray(v, np.float32)) for k, v in sd.items()}


def _hf_folder(path, cfg: dict, seed: int = 0) -> str:
    import torch

    os.makedirs(path)
    torch.save(_original_state_dict(cfg, seed), os.path.join(path, "pytorch_model.bin"))
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(cfg, f)
    return str(path)


_SMALL = dict(z_dim=8, class_embed_dim=8, num_classes=5, eps=1e-4, n_stats=3, output_dim=16,
              layers=[[True, 16, 8], [False, 8, 4], [True, 4, 2], [False, 2, 1]])
ODD_CONFIGS = {
    # 12 attention channels: 12 // 8 = 1 query/key channel, 6 value channels (the channel_width 6);
    # 0/1 upsampling flags, an output_dim the layers do not give, and n_stats 50, whose truncation-1.0
    # selection lands a hair past the last row.
    "width6": dict(_SMALL, channel_width=6, attention_layer_position=3, output_dim=128, n_stats=50,
                   layers=[[1, 16, 8], [0, 8, 4], [1, 4, 2], [0, 2, 1]]),
    # 10 attention channels (1 and 5), bottlenecks 10 // 4 = 2 and 20 // 4 = 5.
    "width5": dict(_SMALL, channel_width=5, attention_layer_position=3),
    # attention at 4x4 before the first block (48 channels), bottlenecks 12, 6, 3 and 6 // 4 = 1;
    # upsampling in the first and third blocks (not the every-second-block pattern of the releases).
    "width3": dict(_SMALL, channel_width=3, attention_layer_position=0),
}


@pytest.mark.parametrize("name", sorted(ODD_CONFIGS))
def test_configs_the_original_floors_convert_and_run(name, tmp_path):
    cfg = ODD_CONFIGS[name]
    G = convert.to_generator(_hf_folder(tmp_path / name, cfg))
    ch, pos = cfg["channel_width"], cfg["attention_layer_position"]
    c = ch * cfg["layers"][pos][1]
    att = G.blocks[pos]
    assert G.kinds[pos] == "attention"
    assert (att.theta.shape, att.phi.shape, att.g.shape, att.o.shape) == ((c, c // 8),) * 2 + ((c, c // 2), (c // 2, c))
    for j, kind in enumerate(G.kinds):  # the floored bottlenecks
        if kind == "block":
            cin = G.blocks[j].bn_0.means.shape[1]
            assert G.blocks[j].conv_0.kernel.shape == (cin, cin // 4)
    assert len(G.layers) == len(cfg["layers"])  # attention counted, the last module is no layer
    assert G.layers[max(G.layers)][:2] == (16, 16)  # from the layers, not output_dim

    lat = G.sample_latents(jax.random.key(0), 2, classes=[0, 4])
    img = np.asarray(G.generate(lat, truncation=1.0))
    assert img.shape == (2, 16, 16, 3) and np.isfinite(img).all() and img.std() > 1e-3
    assert np.array_equal(np.asarray(G.generate(lat, truncation=1.0)), img)  # deterministic
    Z, ctx = G.features(lat, pos + 1, truncation=0.5)  # resuming after the attention
    assert Z.shape[1:] == G.layers[pos + 1] and np.isfinite(np.asarray(Z)).all()
    assert maxabs(G.render(Z, pos + 1, ctx), G.generate(lat, truncation=0.5)) <= 1e-6


def test_the_state_dict_helper_lists_the_original_full_size_keys(folder):
    with open(os.path.join(folder, "keys_full.json")) as f:
        full = json.load(f)
    want = {k: tuple(v["shape"]) for k, v in full["state_dict"].items()}
    assert _original_shapes(full["constructor_kwargs"]) == want
    small = {k: tuple(v.shape) for k, v in readers.read(folder)["state_dict"].items()}
    with open(os.path.join(folder, "config.json")) as f:
        assert _original_shapes(json.load(f)) == small


def test_fields_the_original_ignores_keep_parity(folder, io, image, tmp_path):
    """The test model's folder with 0/1 upsampling flags, another output_dim and a zero
    class_embed_dim converts to the same generator: the original reads none of them."""
    with open(os.path.join(folder, "config.json")) as f:
        cfg = json.load(f)
    cfg = dict(cfg, output_dim=999, class_embed_dim=0, layers=[[int(u), a, b] for u, a, b in cfg["layers"]])
    G = convert.to_generator(_folder_with(tmp_path, folder, config=cfg))
    img = np.asarray(G.generate(Latents(io["noise_vector"], io["class_vector"]), float(io["truncation"])))
    assert maxabs(img, nhwc(io["image"])) <= ATOL
    assert np.array_equal(img, image)


def test_attention_positions_that_name_no_block_mean_no_attention(tmp_path):
    base = dict(_SMALL, channel_width=4)
    for pos in (-1, 4, 9):
        cfg = BigGANConfig.from_dict(base, attention_layer_position=pos)
        assert cfg.attention is None
        m = abstract("biggan", cfg.to_dict())
        assert m.kinds == ("block",) * 4 and sorted(m.layers) == [1, 2, 3]
    # A folder whose config.json says -1 agrees with weights that have no attention module.
    d = _hf_folder(tmp_path / "noattn", dict(base, attention_layer_position=-1))
    G = convert.to_generator(d)
    assert G.config["attention_layer_position"] == -1 and "attention" not in G.kinds


def test_configs_the_original_cannot_build_are_refused_with_the_reason():
    base = dict(_SMALL, channel_width=4, attention_layer_position=2)
    cases = [
        # 3 x 2 = 6 attention channels: 6 // 8 = 0 (the original's spectral norm fails on it)
        (dict(base, channel_width=3, attention_layer_position=3), r"6 // 8 = 0 query and key channels"),
        # a 3-channel block: 3 // 4 = 0 bottleneck channels
        (dict(base, channel_width=3, layers=base["layers"] + [[False, 1, 1]]), r"3 // 4 = 0 channels"),
        (dict(base, layers=[[True, 16, 4], [False, 4, 1]]), r"out_mult must equal in_mult or be half"),
        (dict(base, layers=[[True, 8, 4], [False, 4, 1]]), r"previous stage gives 16"),
        (dict(base, channel_width=2), r"channel_width=2 is below 3"),
        (dict(base, n_stats=1), r"n_stats"),
        (dict(base, layers=[[2, 16, 8], [False, 8, 4], [True, 4, 2], [False, 2, 1]]), r"upsample"),
        (dict(base, layers=[]), r"at least one block"),
    ]
    for cfg, msg in cases:
        with pytest.raises(ConfigError, match=msg):
            BigGANConfig.from_dict(cfg)


def test_truncation_one_with_fifty_rows_uses_the_last_row():
    rows, weights = bn_selection(1.0, 50)
    assert rows == (49, 49) and sum(weights) == pytest.approx(1.0)
    assert bn_selection(1.0, 51) == ((50, 50), (1.0, 0.0))
