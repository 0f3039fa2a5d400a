"""The Generator contract, for every registered family on a small random config
(``helpers.SMALL_CONFIGS``): layer shapes, resuming at every layer reproduces the image, repeated
calls do not recompile, ``sample_fn`` gives ``features``, and configs round-trip and are checked."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import SMALL_CONFIGS, assert_close, small_generator

import ported_gens
from panda_jax.errors import ConfigError
from ported_gens.base import build

FAMILIES = sorted(ported_gens.FAMILIES)
N = 2

_compiles = {"on": False, "count": 0}


def _count(event, *args, **kwargs):
    if _compiles["on"] and event == "/jax/core/compile/backend_compile_duration":
        _compiles["count"] += 1


jax.monitoring.register_event_duration_secs_listener(_count)


def compiles(fn) -> int:
    """How many XLA programs ``fn()`` compiles."""
    _compiles.update(on=True, count=0)
    try:
        jax.block_until_ready(fn())
    finally:
        _compiles["on"] = False
    return _compiles["count"]


def tol(image) -> float:
    """Resuming runs another compiled program than the whole forward: float rounding only."""
    return 1e-5 * max(1.0, float(np.abs(np.asarray(image)).max()))


@pytest.fixture(scope="module", params=FAMILIES)
def gen(request):
    G = small_generator(request.param)
    return G, G.sample_latents(jax.random.key(0), N)


def test_every_family_has_a_small_config():
    assert sorted(SMALL_CONFIGS) == FAMILIES


def test_layers_features_render_generate(gen):
    """``G.layers`` is the shape of ``features`` at every layer, and
    ``render(*features(lat, l), l) == generate(lat)`` (StyleGAN2: the true generator)."""
    G, lat = gen
    image = G.generate(lat)
    assert image.shape[0] == N and image.shape[3] == 3
    assert bool(jnp.all(jnp.isfinite(image)))
    for layer, shape in G.layers.items():
        Z, ctx = G.features(lat, layer)
        assert Z.shape == (N, *shape), layer
        assert_close(f"{G.family} resumed at {layer}", G.render(Z, layer, ctx), image, tol(image))

    def again():
        lat2 = G.sample_latents(jax.random.key(1), N)  # other values, same shapes
        out = [G.generate(lat2)]
        for layer in G.layers:
            Z, ctx = G.features(lat2, layer)
            out.append(G.render(Z, layer, ctx))
        return out

    assert compiles(again) == 0


def test_sample_fn_gives_the_features(gen):
    G, _ = gen
    layer = sorted(G.layers)[len(G.layers) // 2]
    fn, args = G.sample_fn(layer)
    assert G.sample_fn(layer)[0] is fn and hash(fn) == hash(G.sample_fn(layer)[0])
    key = jax.random.key(7)
    sample = jax.jit(fn, static_argnums=2)
    Z = sample(args, key, N)
    want, _ = G.features(G.sample_latents(key, N), layer)
    assert_close(f"{G.family} sample_fn at {layer}", Z, want, tol(want))
    assert compiles(lambda: sample(args, jax.random.key(8), N)) == 0
    assert compiles(lambda: sample(args, key, N + 1)) > 0  # the count sees compilations


def test_config_round_trip_and_checks(gen):
    G, _ = gen
    family = G.family
    cfg = json.loads(json.dumps(G.config))  # what config.json stores
    assert build(family, cfg).config == G.config
    assert type(G).Config.from_dict(cfg) == G.cfg
    assert type(G)(G.cfg).config == G.config
    with pytest.raises(ConfigError, match=r"unknown settings \['bogus', 'extra'\]"):
        build(family, dict(cfg, bogus=1, extra=2))
    name = next(k for k, v in cfg.items() if isinstance(v, int) and not isinstance(v, bool))
    for bad in ("sixty-four", True, 2.5):
        with pytest.raises(ConfigError, match=rf"{name} = {bad!r}"):
            build(family, dict(cfg, **{name: bad}))
    floats = [k for k, v in cfg.items() if isinstance(v, float)]
    for name in floats:
        with pytest.raises(ConfigError, match=rf"{name} = nan.*finite"):
            build(family, dict(cfg, **{name: float("nan")}))


def test_w_space_or_a_clear_error(gen):
    G, lat = gen
    if G.has_w:
        assert G.wp(lat).shape == (N, G.num_ws, G.w_dim)
        return
    for call in (lambda: G.wp(lat), lambda: G.mapping, lambda: G.w_avg, lambda: G.num_ws, lambda: G.image_fn_w(),
                 lambda: G.features_from_wp(jnp.zeros((N, 2, 2)), min(G.layers)), lambda: G.generate_from_wp(None)):
        with pytest.raises(ConfigError, match=f"{G.family} has no W space"):
            call()


def test_genforce_channel_check():
    with pytest.raises(ConfigError, match=r"fmaps_base 32 / fmaps_max 512 leave no channels at 64 px"):
        build("stylegan2", dict(resolution=64, fmaps_base=32))
    with pytest.raises(ConfigError, match=r"missing required settings \['resolution'\]"):
        build("pggan", {})


def test_sample_fn_feeds_the_streamed_init():
    """``(fn, args) = G.sample_fn(l)`` is what ``panda_jax`` streams from (``sample_args=args``)."""
    import panda_jax as pj

    G = small_generator("dcgan")
    fn, args = G.sample_fn(2)
    A = pj.hosvd_init(fn, 3, key=jax.random.key(0), batches=2, batch_size=2, sample_args=args)
    assert A.shape == (G.layers[2][2], 3) and bool(jnp.all(jnp.isfinite(A)))
