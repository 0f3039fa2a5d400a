"""The latent-space interface the baselines need (GANSpace, SeFa, ReSeFa): W and w+ access,
rendering from w+, pure image functions for Jacobians, and SeFa's first-projection weights, on
small random configs; SeFa's weights also against genforce/sefa's own recipe
(``utils.factorize_weight``) applied to the test-vector checkpoints' PyTorch state dicts."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import assert_close, in_float64, small_generator

import ported_gens
from panda_jax.errors import ConfigError, FeatureError
from ported_gens.base import as_latents

N = 2
W_FAMILIES = sorted(f for f, cls in ported_gens.FAMILIES.items() if cls.has_w)


def tol(ref) -> float:
    return 1e-5 * max(1.0, float(np.abs(np.asarray(ref)).max()))


@pytest.fixture(scope="module", params=W_FAMILIES)
def styled(request):
    G = small_generator(request.param)
    return G, G.sample_latents(jax.random.key(0), N)


def test_w_families_are_the_style_based_ones():
    assert W_FAMILIES == ["stylegan", "stylegan2", "stylegan2_rosinality", "stylegan3"]


def test_w_and_wp(styled):
    G, z = styled
    w = G.mapping(z)
    assert w.shape == (N, G.w_dim) and G.w_avg.shape == (G.w_dim,)
    wp = G.wp(z)
    assert wp.shape == (N, G.num_ws, G.w_dim)
    assert_close("wp rows are w", wp, jnp.broadcast_to(w[:, None], wp.shape), 1e-5)
    assert_close("wp from w", G.wp(w=w), wp, 1e-6)
    # truncation moves every row here (StyleGAN/2: the first 18; StyleGAN3: all) towards w_avg
    avg = jnp.asarray(G.w_avg)[None, None, :]
    assert_close("truncated wp", G.wp(z, 0.5), avg + 0.5 * (wp - avg), 1e-5)
    with pytest.raises(ConfigError, match="exactly one"):
        G.wp(z, w=w)
    with pytest.raises(FeatureError, match=rf"expects \[N, {G.w_dim}\]"):
        G.wp(w=w[:, :-1])


def test_rendering_from_wp(styled):
    G, z = styled
    wp = G.wp(z)
    image = G.generate(z)
    assert_close("generate_from_wp(wp(z))", G.generate_from_wp(wp), image, tol(image))
    layer = sorted(G.layers)[len(G.layers) // 2]
    Z, _ = G.features(z, layer)
    Zw, ctx = G.features_from_wp(wp, layer)
    assert_close("features_from_wp", Zw, Z, tol(Z))
    assert_close("render after features_from_wp", G.render(Zw, layer, ctx), image, tol(image))
    # an edit in w+ (one row moved) renders through the same path
    edited = wp.at[:, -1].add(3.0)
    out = G.generate_from_wp(edited)
    assert float(jnp.abs(out - image).max()) > 1e-3
    fn, args = G.image_fn_w()
    assert G.image_fn_w()[0] is fn
    assert_close("image_fn_w", jax.jit(fn)(args, edited), out, tol(out))
    with pytest.raises(FeatureError, match=rf"\[N, {G.num_ws}, {G.w_dim}\]"):
        G.generate_from_wp(wp[:, 1:])


def _fd(f, x, dx, h):
    """Central finite difference of ``f`` at ``x`` along ``dx``."""
    return (f(x + h * dx) - f(x - h * dx)) / (2 * h)


@pytest.mark.parametrize("family", sorted(ported_gens.FAMILIES))
def test_image_fn_is_generate(family):
    G = small_generator(family)
    lat = as_latents(G.sample_latents(jax.random.key(1), N))
    extra = () if lat.classes is None else (lat.classes,)
    fn, args = G.image_fn()
    assert G.image_fn()[0] is fn
    image = G.generate(lat)
    assert_close(f"{family} image_fn", jax.jit(fn)(args, lat.z, *extra), image, tol(image))


# The derivative checks run in float64: float32 finite differences are dominated by rounding and,
# with steps large enough to beat it, by the leaky-ReLU kinks they cross. With h = 1e-6 in float64
# both are ~1e-9. The Jacobian is taken of the image projected on K fixed random images (K
# backward passes instead of one per pixel).
H, RTOL, K = 1e-6, 1e-6, 4


def _projected(fn, shape):
    P = jax.random.normal(jax.random.key(9), (K, *shape), jnp.float64)
    return lambda *a: jnp.tensordot(P, fn(*a), axes=len(shape))  # [K]


@pytest.mark.parametrize("family", ["dcgan", "stylegan2", "biggan"])
def test_image_fn_jacobian_matches_finite_differences(family):
    with jax.enable_x64(True):
        G = in_float64(small_generator(family))
        lat = as_latents(G.sample_latents(jax.random.key(1), 1))
        z = lat.z.astype(jnp.float64)
        extra = () if lat.classes is None else (lat.classes.astype(jnp.float64),)
        fn, args = G.image_fn()
        shape = jax.eval_shape(fn, args, z, *extra).shape
        proj = _projected(fn, shape)
        J = jax.jit(jax.jacrev(proj, argnums=1))(args, z, *extra)  # [K, 1, z_dim]
        assert J.shape == (K, *z.shape) and J.dtype == jnp.float64
        f = jax.jit(lambda z: proj(args, z, *extra))
        for k in (0, G.z_dim // 2, G.z_dim - 1):
            dz = jnp.zeros_like(z).at[0, k].set(1.0)
            fd = _fd(f, z, dz, H)
            assert float(jnp.abs(fd).max()) > 1e-3, "the image does not depend on this coordinate"
            assert_close(f"{family} d image / d z[{k}]", J[:, 0, k], fd, RTOL * float(jnp.abs(fd).max()))


def test_image_fn_w_jvp_matches_finite_differences():
    family = "stylegan"
    with jax.enable_x64(True):
        G = in_float64(small_generator(family))
        wp = G.wp(G.sample_latents(jax.random.key(2), 1)).astype(jnp.float64)
        fn, args = G.image_fn_w()
        dwp = jax.random.normal(jax.random.key(3), wp.shape, jnp.float64)
        _, jv = jax.jit(lambda x, dx: jax.jvp(lambda y: fn(args, y), (x,), (dx,)))(wp, dwp)
        fd = _fd(jax.jit(lambda x: fn(args, x)), wp, dwp, H)
        assert_close(f"{family} jvp along a w+ direction", jv, fd, RTOL * float(jnp.abs(fd).max()))


# ---- SeFa's first projection ------------------------------------------------------------


def _unit_rows(W):
    W = np.asarray(W, np.float64)
    return W / np.linalg.norm(W, axis=1, keepdims=True)


def test_first_projection_dcgan_is_the_kernel():
    G = small_generator("dcgan")
    W = np.asarray(G.first_projection_weights())
    kernel = np.asarray(G.convs[0].kernel[...])  # [nz, 4, 4, C]
    nz = G.z_dim
    assert W.shape == (4 * 4 * kernel.shape[-1], nz)
    np.testing.assert_array_equal(W, kernel.reshape(nz, -1).T)
    # W^T W is SeFa's matrix on the PyTorch weight [nz, C, 4, 4] flattened to [nz, C*4*4] with
    # unit columns (sefa's normalisation), so the eigenvectors are SeFa's directions
    torch_w = kernel.transpose(0, 3, 1, 2).reshape(nz, -1).astype(np.float64)
    torch_w = torch_w / np.linalg.norm(torch_w, axis=0, keepdims=True)
    Wn = _unit_rows(W)
    np.testing.assert_allclose(Wn.T @ Wn, torch_w @ torch_w.T, rtol=1e-10, atol=1e-10)
    with pytest.raises(ConfigError, match="layers=None"):
        G.first_projection_weights([0])


def test_first_projection_of_the_style_families():
    for family in W_FAMILIES:
        G = small_generator(family)
        full = np.asarray(G.first_projection_weights())
        rows = [np.asarray(G._style_weight(r)) for r in range(G.num_ws)]
        assert all(r.shape[1] == G.w_dim for r in rows)
        np.testing.assert_array_equal(full, np.concatenate(rows))
        np.testing.assert_array_equal(np.asarray(G.first_projection_weights([2, 0])), np.concatenate([rows[0], rows[2]]))
        np.testing.assert_array_equal(np.asarray(G.first_projection_weights(1)), rows[1])
        for bad in ([G.num_ws], [-1], [], [True]):
            with pytest.raises(ConfigError, match=rf"w\+ rows .* in 0..{G.num_ws - 1}"):
                G.first_projection_weights(bad)
    G = small_generator("stylegan3")
    assert G._style_weight(0).shape == (4, G.w_dim)  # the Fourier input's affine: rotation, translation
    np.testing.assert_array_equal(np.asarray(G._style_weight(G.num_ws - 1)), np.asarray(G.synthesis[-1].affine.kernel[...]).T)


def test_first_projection_biggan_is_the_z_part_of_the_stem():
    G = small_generator("biggan")
    W = np.asarray(G.first_projection_weights())
    kernel = np.asarray(G.stem.gen_z.kernel[...])  # [2 * z_dim, out]: [z, class embedding] inputs
    np.testing.assert_array_equal(W, kernel[: G.z_dim].T)


def _sefa_weight(sd, gan_type, num_layers):
    """genforce/sefa ``utils.factorize_weight``'s matrix (before normalising), on a PyTorch state dict."""
    if gan_type == "pggan":
        w = sd["layer0.weight"]  # [out, z, 4, 4]
        return np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(w.shape[1], -1)
    weights = []
    for idx in range(num_layers):
        name = f"layer{idx}"
        if gan_type == "stylegan2" and idx == num_layers - 1:
            name = f"output{idx // 2}"
        weights.append(sd[f"synthesis.{name}.style.weight"].T)
    return np.concatenate(weights, axis=1)


@pytest.mark.parametrize("folder", ["pggan_genforce", "stylegan_genforce", "stylegan2_genforce"])
def test_first_projection_is_sefas_on_the_genforce_checkpoints(testvectors, folder):
    import convert
    from convert import readers

    path = os.path.join(testvectors, folder, "checkpoint.pth")
    sd = readers.read(path)["generator_smooth"]
    G = convert.to_generator(path)
    want = _sefa_weight(sd, G.family, G.num_ws if G.has_w else None)
    np.testing.assert_array_equal(np.asarray(G.first_projection_weights()).T, want)
