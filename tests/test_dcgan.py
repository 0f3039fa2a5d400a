"""DCGAN port: parity with the PyTorch generator, conversion, and the converted-directory round trip.

The oracle is the ``gan-face-generate`` package's own ``Generator`` (``models.py`` needs only
torch) with the embedded faces weights.

Tolerance: images within 1e-5 max-abs of PyTorch float32. Feature maps within 1e-5 max-abs,
or one part per million of the layer's largest value where that is larger: layer 4 reaches
|Z| ~ 37, where float32 keeps ~7 digits, and PyTorch's own float32 result there is ~1.5e-5
from its float64 result, so no float32 port can promise 1e-5 absolute against it. The same
bound is checked against PyTorch float64 (the exact answer).
"""

import os

import numpy as np
import pytest
from helpers import nhwc

torch = pytest.importorskip("torch")

import convert  # noqa: E402
import ported_gens  # noqa: E402
from panda_jax.errors import CheckpointError, LayerError  # noqa: E402
from ported_gens.dcgan import DCGAN, default_checkpoint  # noqa: E402

RELU_INDICES = {1: 2, 2: 5, 3: 8, 4: 11}  # layer -> nn.Sequential index of its ReLU


def _torch_generator(sd, nz=100, ngf=64, nc=3, double=False):
    from gan_face_generate.models import Generator

    net = Generator(0, nc, nz, ngf)
    net.load_state_dict(sd)
    if double:
        net = net.double()
    return net.eval()


def _torch_forward(net, z, double=False):
    """Image and ReLU outputs (NHWC numpy) of the torch generator."""
    feats, hooks = {}, []
    for layer, i in RELU_INDICES.items():
        hooks.append(net.main[i].register_forward_hook(
            lambda m, a, o, layer=layer: feats.__setitem__(layer, o.detach().clone())))
    x = torch.from_numpy(z)[:, :, None, None]
    with torch.no_grad():
        img = net(x.double() if double else x)
    for h in hooks:
        h.remove()
    return nhwc(img), {l: nhwc(f) for l, f in feats.items()}


@pytest.fixture(scope="module")
def checkpoint():
    return default_checkpoint()


@pytest.fixture(scope="module")
def state_dict(checkpoint):
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["netG_state_dict"]


@pytest.fixture(scope="module")
def generator(checkpoint):
    return convert.to_generator(checkpoint)


def _bound(ref):
    return max(1e-5, 1e-6 * float(np.abs(ref).max()))


def test_parity_with_pytorch(generator, state_dict):
    z = np.random.default_rng(0).standard_normal((8, 100)).astype(np.float32)
    img32, feats32 = _torch_forward(_torch_generator(state_dict), z)
    img64, feats64 = _torch_forward(_torch_generator(state_dict, double=True), z, double=True)

    img = np.asarray(generator.generate(z))
    assert img.shape == (8, 64, 64, 3)
    err = np.abs(img - img32).max()
    print(f"\nimage: max-abs vs torch float32 {err:.3g}, vs float64 {np.abs(img - img64).max():.3g}")
    assert err <= 1e-5

    for layer in (1, 2, 3, 4):
        Z, _ = generator.features(z, layer)
        Z = np.asarray(Z)
        assert Z.shape == (8,) + generator.layers[layer]
        e32, e64 = np.abs(Z - feats32[layer]).max(), np.abs(Z - feats64[layer]).max()
        print(f"layer {layer} {Z.shape[1:]}: max|Z| {np.abs(feats32[layer]).max():.3g}, "
              f"max-abs vs torch float32 {e32:.3g}, vs float64 {e64:.3g}")
        assert e32 <= _bound(feats32[layer])
        assert e64 <= _bound(feats64[layer])


def test_layers_and_latents(generator):
    assert generator.layers == {1: (4, 4, 512), 2: (8, 8, 256), 3: (16, 16, 128), 4: (32, 32, 64)}
    assert generator.z_dim == 100
    import jax

    z = generator.sample_latents(jax.random.key(0), 3)
    assert z.shape == (3, 100)
    with pytest.raises(LayerError, match="1..4"):
        generator.features(z, 5)


def test_round_trip_through_directory(tmp_path, checkpoint, generator):
    out = str(tmp_path / "model")
    convert.convert(checkpoint, out)
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no temporary left behind
    G = ported_gens.load(out)
    assert isinstance(G, DCGAN)
    assert G.config == {"nz": 100, "ngf": 64, "nc": 3, "blocks": 4}
    assert G.source["file"] == "weights.tar" and len(G.source["sha256"]) == 64
    z = np.random.default_rng(1).standard_normal((2, 100)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(G.generate(z)), np.asarray(generator.generate(z)))


def test_other_sizes_and_wrappers():
    """Shapes are inferred (nz, ngf, nc, depth); DataParallel prefixes and wrappers are accepted."""
    from gan_face_generate.models import Generator

    torch.manual_seed(0)
    net = Generator(0, 1, 16, 8)
    for m in net.modules():  # non-trivial batch-norm statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    sd = {"module." + k: v.numpy() for k, v in net.state_dict().items()}
    G = convert.dcgan.to_generator({"generator": sd})
    assert G.config == {"nz": 16, "ngf": 8, "nc": 1, "blocks": 4}
    z = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)
    ref, feats = _torch_forward(net, z)
    assert np.abs(np.asarray(G.generate(z)) - ref).max() <= 1e-5
    assert np.abs(np.asarray(G.features(z, 2)[0]) - feats[2]).max() <= 1e-5


def test_other_architectures_are_refused():
    from gan_face_generate.models import Discriminator

    disc = {k: v.numpy() for k, v in Discriminator(0, 3, 64).state_dict().items()}
    assert not convert.dcgan.claims(disc)
    with pytest.raises(CheckpointError, match="main.0, main.3"):
        convert.dcgan.to_generator(disc)
    with pytest.raises(CheckpointError, match="not a DCGAN generator"):
        convert.dcgan.to_generator({"layer.weight": np.zeros((3, 3), np.float32)})


def test_missing_default_checkpoint_names_the_install(monkeypatch):
    import ported_gens.dcgan as dcgan

    monkeypatch.setattr(dcgan, "DEFAULT_MODULE", "no_such_module_for_dcgan_weights")
    with pytest.raises(CheckpointError, match="pip install --no-deps gan-face-generate"):
        dcgan.default_checkpoint()
