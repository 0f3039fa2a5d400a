"""The baselines (SeFa, GANSpace, ReSeFa) on small cases with known answers."""

import re
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import panda_jax.directions as pd
from panda_jax.errors import ConfigError, FeatureError, LayerError, PandaError, RankError


def rows_match(got, want, atol):
    """Rows equal up to each row's sign (eigenvectors)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    s = np.sign(np.sum(got * want, axis=-1, keepdims=True))
    np.testing.assert_allclose(got, s * want, atol=atol)


def check_canonical(d):
    d = np.asarray(d)
    np.testing.assert_allclose(np.linalg.norm(d, axis=-1), 1.0, atol=1e-5)
    idx = np.argmax(np.abs(d), axis=-1)
    assert np.all(np.take_along_axis(d, idx[..., None], axis=-1) > 0)


# ---------------------------------------------------------------------------------------------
# SeFa


def upstream_sefa(weights_out_by_latent):
    """genforce/sefa utils.py factorize_weight, on weights held as upstream holds them."""
    weight = np.concatenate([w.T for w in weights_out_by_latent], axis=1).astype(np.float64)
    weight = weight / np.linalg.norm(weight, axis=0, keepdims=True)
    vals, vecs = np.linalg.eig(weight.dot(weight.T))
    order = np.argsort(-vals.real)
    return vals.real[order], vecs.T.real[order]


def test_sefa_matches_upstream_factorize_weight():
    rng = np.random.default_rng(0)
    scales = np.linspace(3.0, 0.5, 12)  # distinct eigenvalues, and rows of different norms
    ws = [(rng.normal(size=(n, 12)) * scales[None, :] * rng.uniform(0.1, 5, size=(n, 1))).astype(np.float32)
          for n in (40, 24, 8)]
    vals, vecs = upstream_sefa(ws)
    res = pd.sefa([jnp.asarray(w) for w in ws], k=5)
    assert res.method == "sefa" and len(res) == 5
    np.testing.assert_allclose(res.values, vals[:5], rtol=1e-5)
    rows_match(res.directions, vecs[:5], atol=1e-4)
    check_canonical(res.directions)
    full = pd.sefa(ws[0])
    assert full.directions.shape == (12, 12) and np.all(np.diff(np.asarray(full.values)) <= 0)
    # the normalisation is per output unit: scaling one weight row changes nothing
    scaled = ws[0].copy()
    scaled[3] *= 100.0
    np.testing.assert_allclose(pd.sefa(scaled).values, full.values, rtol=1e-5)


def test_sefa_composes_with_jit():
    w = jnp.asarray(np.random.default_rng(1).normal(size=(20, 6)), jnp.float32)
    got = jax.jit(lambda w: pd.sefa(w, 2))(w)
    np.testing.assert_allclose(got.directions, pd.sefa(w, 2).directions, atol=1e-5)
    assert got.method == "sefa"


def test_sefa_errors():
    w = np.ones((4, 3), np.float32) + np.eye(4, 3, dtype=np.float32)
    with pytest.raises(RankError, match="k = 4 is larger than the latent dimension 3"):
        pd.sefa(w, k=4)
    with pytest.raises(RankError):
        pd.sefa(w, k=0)
    with pytest.raises(FeatureError, match="latent dimension"):
        pd.sefa([w, np.ones((4, 5), np.float32)])
    with pytest.raises(FeatureError, match="all zero"):
        pd.sefa(np.concatenate([w, np.zeros((1, 3), np.float32)]))
    with pytest.raises(FeatureError, match="NaN/inf"):
        pd.sefa(np.where(np.eye(4, 3) > 0, np.nan, w))
    with pytest.raises(FeatureError, match=r"\[out, latent_dim\]"):
        pd.sefa(np.ones(3, np.float32))


# ---------------------------------------------------------------------------------------------
# GANSpace: streamed PCA

D_SMALL = 16
MIX = np.random.default_rng(2).normal(size=(D_SMALL, D_SMALL)).astype(np.float32) * np.geomspace(
    4.0, 0.1, D_SMALL, dtype=np.float32
)[:, None]


def sample_w(key, n):
    """Correlated vectors with a mean far from zero (w-like), to stress the streamed moments."""
    return 20.0 + jax.random.normal(key, (n, D_SMALL)) @ jnp.asarray(MIX)


def sample_with_args(args, key, n):
    mix, shift = args
    return shift + jax.random.normal(key, (n, D_SMALL)) @ mix


def materialise(fn, key, n, bs):
    """The exact samples the streamed loop sees: batch i from fold_in(key, i), the last cut."""
    batches = [np.asarray(fn(jax.random.fold_in(key, i), bs)) for i in range(-(-n // bs))]
    return np.concatenate(batches)[:n].astype(np.float64)


def numpy_pca(x, k):
    mean = x.mean(axis=0)
    cov = np.cov(x, rowvar=False)  # n - 1, as IncrementalPCA.explained_variance_
    vals, vecs = np.linalg.eigh(cov)
    vals, vecs = vals[::-1], vecs[:, ::-1].T
    return vecs[:k], np.sqrt(vals[:k]), mean, vals[:k] / np.trace(cov)


def test_ganspace_streamed_pca_matches_numpy():
    key, n, bs, k = jax.random.key(3), 5003, 512, 6  # a partial last batch
    p = pd.ganspace(sample_w, n, k, key=key, batch_size=bs)
    x = materialise(sample_w, key, n, bs)
    comps, std, mean, ratio = numpy_pca(x, k)
    assert p.n_samples == n and p.components.shape == (k, D_SMALL)
    np.testing.assert_allclose(p.mean, mean, rtol=1e-5)
    np.testing.assert_allclose(p.stdev, std, rtol=1e-5)
    np.testing.assert_allclose(p.explained_variance_ratio, ratio, rtol=1e-5)
    rows_match(p.components, comps, atol=1e-5)
    check_canonical(p.components)
    d = p.as_directions()
    assert d.method == "ganspace" and d.values is p.stdev


def test_ganspace_sample_args_are_traced_and_batch_size_is_free():
    args = (jnp.asarray(MIX), jnp.float32(20.0))
    key = jax.random.key(4)
    a = pd.ganspace(sample_with_args, 3000, 4, key=key, batch_size=1000, sample_args=args)
    b = pd.ganspace(sample_w, 3000, 4, key=key, batch_size=1000)
    np.testing.assert_allclose(a.stdev, b.stdev, rtol=1e-5)
    # batch_size changes which samples are drawn, not what is estimated
    c = pd.ganspace(sample_w, 3000, 4, key=key, batch_size=3000)
    x = materialise(sample_w, key, 3000, 3000)
    np.testing.assert_allclose(c.stdev, numpy_pca(x, 4)[1], rtol=1e-5)


def test_ganspace_memory_does_not_grow_with_n_samples():
    from panda_jax.directions.ganspace import _stream_moments

    key = jax.random.key(0)
    lowered = {n: _stream_moments.lower(sample_w, False, n, 256, None, key) for n in (1_000, 10_000_000)}
    stats = {n: lw.compile().memory_analysis() for n, lw in lowered.items()}
    assert stats[1_000].temp_size_in_bytes == stats[10_000_000].temp_size_in_bytes
    assert stats[1_000].output_size_in_bytes == stats[10_000_000].output_size_in_bytes
    # the loop carry is the three moments, whatever n is: [], [D], [D, D]
    out = jax.eval_shape(
        lambda k: pd.stream_moments(sample_w, 10_000_000, key=k, batch_size=256), jax.random.key(0)
    )
    assert isinstance(out, pd.Moments)
    assert [o.shape for o in out] == [(), (D_SMALL,), (D_SMALL, D_SMALL)]
    # the same program for every n (only the trip count differs), no array larger than a batch
    texts = {
        n: str(jax.make_jaxpr(_stream_moments, static_argnums=(0, 1, 2, 3))(sample_w, False, n, 256, None, key))
        for n in (1_000, 10_000_000)
    }
    assert len(texts[1_000].splitlines()) == len(texts[10_000_000].splitlines())
    dims = [int(d) for t in texts.values() for shape in re.findall(r"\[([\d,]+)\]", t) for d in shape.split(",")]
    assert max(dims) == 256


def test_ganspace_1e5_samples_of_512_is_fast():
    mix = jnp.asarray(np.random.default_rng(5).normal(size=(512, 512)).astype(np.float32) / 20)

    def sample(key, n):
        return 3.0 + jax.random.normal(key, (n, 512)) @ mix

    t = time.perf_counter()
    p = pd.ganspace(sample, 100_000, 20, key=jax.random.key(6), batch_size=1024)
    p.stdev.block_until_ready()
    seconds = time.perf_counter() - t
    print(f"streamed GANSpace: 1e5 x 512 in {seconds:.2f} s ({1e5 / seconds:,.0f} samples/s, compile included)")
    assert seconds < 60
    # the true covariance is mix^T mix; 1e5 samples estimate its top stdev to about 1%
    top = np.sqrt(np.linalg.eigvalsh(np.asarray(mix, np.float64).T @ np.asarray(mix, np.float64))[::-1][:3])
    np.testing.assert_allclose(p.stdev[:3], top, rtol=0.03)


def test_ganspace_errors():
    key = jax.random.key(0)
    with pytest.raises(ConfigError, match="n_samples must be an integer >= 2"):
        pd.ganspace(sample_w, 1, 2, key=key)
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1"):
        pd.ganspace(sample_w, 100, 2, key=key, batch_size=0)
    with pytest.raises(RankError, match="k = 17 is larger than the sample dimension 16"):
        pd.ganspace(sample_w, 100, 17, key=key)
    with pytest.raises(ConfigError, match="key"):
        pd.ganspace(sample_w, 100, 2, key=None)
    with pytest.raises(FeatureError, match=r"shape \[n, D\]"):
        pd.ganspace(lambda key, n: jnp.zeros((n, 4, 4)), 100, 2, key=key)
    with pytest.raises(FeatureError, match="covariance has NaN/inf"):
        pd.ganspace(lambda key, n: jnp.full((n, 3), jnp.nan), 100, 2, key=key)


# ---------------------------------------------------------------------------------------------
# GANSpace: transfer to z by regression


def whitened(n, d, seed):
    """z with sample mean exactly 0 and z^T z = (n - 1) I."""
    z = np.random.default_rng(seed).normal(size=(n, d))
    z -= z.mean(axis=0)
    q, _ = np.linalg.qr(z)
    return q * np.sqrt(n - 1)


def test_regression_transfer_closed_form():
    # features f = z G; with white z, the feature PCA is G's right singular vectors c_j, and
    # regressing z on the coordinates gives M_j proportional to G c_j (derivation in the docstring
    # of latent_directions_by_regression: A^T A = (n-1) I, A^T Z = (n-1) (G C^T S^-1)^T)
    n, dz, F, k = 400, 5, 12, 3
    G = np.random.default_rng(7).normal(size=(dz, F)) * np.array([5, 4, 3, 2, 1])[:, None]
    z = whitened(n, dz, 8)
    f = z @ G
    comps, std, mean, _ = numpy_pca(f, k)
    coords = (f - mean) @ comps.T
    got = pd.latent_directions_by_regression(jnp.asarray(z, jnp.float32), jnp.asarray(coords, jnp.float32), std)
    want = (G @ comps.T).T
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-5)  # signs follow the components
    # same directions without the stdev scaling (it only rescales rows of M)
    np.testing.assert_allclose(
        pd.latent_directions_by_regression(z.astype(np.float32), coords.astype(np.float32)), want, atol=1e-5
    )


def test_streamed_regression_matches_materialised():
    dz, F, k, n, bs = 6, 20, 4, 3000, 700
    G = jnp.asarray(np.random.default_rng(9).normal(size=(dz, F)).astype(np.float32))

    def features(z):
        return jnp.tanh(z @ G) + 0.5 * (z @ G)  # mildly non-linear, like a real layer

    def pair(key, m):
        z = jax.random.normal(key, (m, dz))
        return z, features(z)

    key = jax.random.key(10)
    pca = pd.ganspace(lambda kk, m: pair(kk, m)[1], n, k, key=key, batch_size=bs)
    got = pd.ganspace_regress(pair, pca, n, key=key, batch_size=bs)
    z = materialise(lambda kk, m: pair(kk, m)[0], key, n, bs)
    f = materialise(lambda kk, m: pair(kk, m)[1], key, n, bs)
    coords = (f - np.asarray(pca.mean)) @ np.asarray(pca.components, np.float64).T / np.asarray(pca.stdev)
    m_t = np.linalg.lstsq(coords, z, rcond=None)[0]  # upstream: scipy.linalg.lstsq(A, Z)
    want = m_t / np.linalg.norm(m_t, axis=1, keepdims=True)
    np.testing.assert_allclose(got, want, atol=1e-4)
    np.testing.assert_allclose(
        pd.latent_directions_by_regression(z.astype(np.float32), coords.astype(np.float32)), want, atol=1e-4
    )


def test_regression_errors():
    z = np.zeros((3, 4), np.float32)
    with pytest.raises(RankError, match="3 samples cannot determine 5 directions"):
        pd.latent_directions_by_regression(z, np.zeros((3, 5), np.float32))
    with pytest.raises(FeatureError, match="same samples"):
        pd.latent_directions_by_regression(z, np.zeros((4, 2), np.float32))
    with pytest.raises(RankError, match="zero variance"):
        pd.latent_directions_by_regression(z, np.ones((3, 2), np.float32), np.array([1.0, 0.0], np.float32))
    pca = pd.ganspace(sample_w, 100, 4, key=jax.random.key(0))
    with pytest.raises(RankError, match="n_samples = 3"):
        pd.ganspace_regress(lambda k, n: (jnp.zeros((n, 2)), jnp.zeros((n, D_SMALL))), pca, 3, key=jax.random.key(0))
    with pytest.raises(FeatureError, match="components have 16"):
        pd.ganspace_regress(lambda k, n: (jnp.zeros((n, 2)), jnp.zeros((n, 5))), pca, 100, key=jax.random.key(0))


# ---------------------------------------------------------------------------------------------
# Edits on w+ rows


def test_edit_wplus_layer_range():
    wp = jnp.asarray(np.random.default_rng(11).normal(size=(3, 8, 4)), jnp.float32)
    d = jnp.array([1.0, 0.0, 0.0, 0.0])
    out = pd.edit_wplus(wp, d, 2.0, layers=(2, 5))
    delta = np.asarray(out - wp)
    np.testing.assert_allclose(delta[:, 2:5, 0], 2.0, rtol=1e-6)
    assert np.all(delta[:, :2] == 0) and np.all(delta[:, 5:] == 0)
    assert np.all(delta[:, :, 1:] == 0)
    per = pd.edit_wplus(wp, d, jnp.array([1.0, 0.0, -1.0]))
    np.testing.assert_allclose(np.asarray(per - wp)[:, :, 0], [[1.0] * 8, [0.0] * 8, [-1.0] * 8], atol=1e-6)
    jitted = jax.jit(pd.edit_wplus, static_argnames="layers")(wp, d, 2.0, layers=(2, 5))
    np.testing.assert_allclose(jitted, out)
    g = jax.grad(lambda a: jnp.sum(pd.edit_wplus(wp, d, a, layers=(0, 3))))(1.0)
    assert float(g) == pytest.approx(3 * 3)


def test_edit_wplus_errors():
    wp = jnp.zeros((2, 8, 4))
    with pytest.raises(LayerError, match=r"use 0 <= start < end <= 8"):
        pd.edit_wplus(wp, jnp.zeros(4), 1.0, layers=(5, 9))
    with pytest.raises(LayerError):
        pd.edit_wplus(wp, jnp.zeros(4), 1.0, layers=(3, 3))
    with pytest.raises(FeatureError, match=r"shape \(4,\)"):
        pd.edit_wplus(wp, jnp.zeros(5), 1.0)
    with pytest.raises(FeatureError, match=r"\[N, L, D\]"):
        pd.edit_wplus(jnp.zeros((8, 4)), jnp.zeros(4), 1.0)
    with pytest.raises(ConfigError, match="alpha"):
        pd.edit_wplus(wp, jnp.zeros(4), jnp.ones(3))


# ---------------------------------------------------------------------------------------------
# ReSeFa

H, W, C, D = 4, 4, 2, 6
REGION = np.zeros((H, W), np.float32)
REGION[:2, :2] = 1  # 4 pixels x 2 channels = 8 rows inside, 24 outside


def planted_generator(outside0=0.5, seed=12):
    """A linear generator x = M z whose answer is closed form.

    Inside the region M's columns are orthogonal with norms a_j, outside orthogonal with norms
    b_j, all in a rotated latent basis Q: A and B are diagonal in that basis, so the generalised
    eigenvectors are Q's columns with quotients (a_j^2 / 8) / (b_j^2 / 24). ``outside0=0``
    makes the first direction move only the region (B singular).
    """
    rng = np.random.default_rng(seed)
    a = np.array([3.0, 1.0, 2.0, 0.5, 1.5, 0.2])
    b = np.array([outside0, 1.0, 1.5, 0.8, 3.0, 2.0])
    qf = np.linalg.qr(rng.normal(size=(8, D)))[0] * a
    qb = np.linalg.qr(rng.normal(size=(24, D)))[0] * b
    q = np.linalg.qr(rng.normal(size=(D, D)))[0]
    rows = np.zeros((H, W, C, D))
    inside = REGION.astype(bool)
    rows[inside] = qf.reshape(4, C, D)
    rows[~inside] = qb.reshape(12, C, D)
    M = rows.reshape(H * W * C, D) @ q.T  # latent z = q u; direction j in z is q[:, j]
    return M.astype(np.float32), a**2 / 8, b**2 / 24, q.T


def planted_answer():
    M, fa, fb, dirs = planted_generator()
    quotients = fa / fb
    order = np.argsort(-quotients)
    return M, quotients[order], dirs[order]


def upstream_resefa(jac_hwcd, mask, tau=None):
    """zhujiapeng/resefa compute_direction.py for one sample's Jacobian [C, H, W, 1, D] there."""
    fore, back = np.where(mask == 1), np.where(1 - mask == 1)
    j = np.moveaxis(jac_hwcd, 2, 0)[:, :, :, None, :]
    jf = j[:, fore[0], fore[1], 0].reshape(-1, j.shape[-1])
    jb = j[:, back[0], back[1], 0].reshape(-1, j.shape[-1])
    mf = jf.T.dot(jf) / jf.shape[0]
    mb = jb.T.dot(jb) / jb.shape[0]
    if tau is not None:
        mb = mb + tau * np.trace(mb) * np.identity(mb.shape[0])
    vals, vecs = np.linalg.eig(np.linalg.inv(mb).dot(mf))
    vals, vecs = np.real(vals), np.real(vecs).T
    order = np.argsort(-vals)
    return vals[order], vecs[order] / np.linalg.norm(vecs[order], axis=1, keepdims=True)


def test_resefa_planted_linear_generator():
    M, quotients, dirs = planted_answer()
    jac = np.broadcast_to(M.reshape(H, W, C, D), (2, H, W, C, D))
    res = pd.resefa(jac, REGION, k=4)
    assert res.method == "resefa"
    np.testing.assert_allclose(res.values, quotients[:4], rtol=1e-4)
    rows_match(res.directions, dirs[:4], atol=1e-4)
    check_canonical(res.directions)
    # the same from the image function, vmapped in chunks, JVPs in chunks, a padded last chunk
    image_fn = lambda z: (jnp.asarray(M) @ z).reshape(H, W, C)  # noqa: E731
    z = jnp.asarray(np.random.default_rng(13).normal(size=(5, D)), jnp.float32)
    grams = pd.region_grams_from_fn(image_fn, z, REGION, chunk_size=2, tangent_chunk=4)
    assert grams.inside.shape == (D, D)
    from_fn = pd.resefa_from_grams(grams, 4)
    np.testing.assert_allclose(from_fn.values, quotients[:4], rtol=1e-4)
    rows_match(from_fn.directions, dirs[:4], atol=1e-4)
    # the top direction moves the region and (relatively) little else
    x = np.asarray(M @ np.asarray(res.directions[0])).reshape(H, W, C)
    inside = np.abs(x[REGION > 0]).mean()
    outside = np.abs(x[REGION == 0]).mean()
    assert inside > 5 * outside


def test_resefa_matches_upstream_per_sample():
    rng = np.random.default_rng(14)
    jac = rng.normal(size=(3, H, W, C, D)).astype(np.float32) * np.geomspace(2, 0.5, D)
    res = pd.resefa(jac, REGION, per_sample=True)
    assert res.directions.shape == (3, D, D) and res.values.shape == (3, D)
    for i in range(3):
        vals, vecs = upstream_resefa(jac[i].astype(np.float64), REGION)
        np.testing.assert_allclose(res.values[i], vals, rtol=1e-4)
        rows_match(res.directions[i], vecs, atol=1e-4)
    # upstream's --full_rank regularisation
    reg = pd.resefa(jac[:1], REGION, 3, tau=1e-3)
    vals, vecs = upstream_resefa(jac[0].astype(np.float64), REGION, tau=1e-3)
    np.testing.assert_allclose(reg.values, vals[:3], rtol=1e-4)
    rows_match(reg.directions, vecs[:3], atol=1e-4)
    # flattened [N, H*W*C, D] Jacobians and per-sample grams from the image function agree
    flat = pd.resefa(jac.reshape(3, -1, D), REGION, per_sample=True)
    np.testing.assert_allclose(flat.values, res.values, rtol=1e-5)
    grams = pd.region_grams_from_fn(
        lambda p, z: (p @ z).reshape(H, W, C), jnp.ones((2, D)), REGION, fn_args=jnp.asarray(jac[1].reshape(-1, D)),
        per_sample=True,
    )
    assert grams.inside.shape == (2, D, D)
    np.testing.assert_allclose(pd.resefa_from_grams(grams).values[1], res.values[1], rtol=1e-4)


def test_resefa_singular_outside_needs_tau():
    # one latent direction moves only the region: B is singular; upstream would invert it anyway
    M, fa, fb, dirs = planted_generator(outside0=0.0)
    jac = M.reshape(1, H, W, C, D)
    with pytest.raises(RankError, match="tau=1e-3"):
        pd.resefa(jac, REGION, 2)
    # with B + tau tr(B) I that direction leads, with the quotient A_00 / (tau tr B), exactly
    tau = 1e-3
    res = pd.resefa(jac, REGION, 2, tau=tau)
    rows_match(res.directions[:1], dirs[:1], atol=1e-4)
    np.testing.assert_allclose(res.values[0], fa[0] / (tau * fb.sum()), rtol=1e-3)
    vals, vecs = upstream_resefa(jac[0].astype(np.float64), REGION, tau=tau)
    np.testing.assert_allclose(res.values, vals[:2], rtol=1e-3)


def test_region_grams_from_fn_matches_reverse_mode_jacobians():
    M = jnp.asarray(np.random.default_rng(17).normal(size=(H * W * C, D)), jnp.float32)
    image_fn = lambda z: jnp.tanh(M @ z + jnp.sin(z[0])).reshape(H, W, C)  # noqa: E731
    z = jnp.asarray(np.random.default_rng(18).normal(size=(3, D)), jnp.float32)
    jac = jax.vmap(jax.jacrev(image_fn))(z)  # [N, H, W, C, D]
    for per_sample in (False, True):
        want = pd.region_grams(jac, REGION, per_sample=per_sample)
        got = pd.region_grams_from_fn(image_fn, z, REGION, chunk_size=2, tangent_chunk=5, per_sample=per_sample)
        np.testing.assert_allclose(got.inside, want.inside, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.outside, want.outside, rtol=1e-5, atol=1e-6)


def test_resefa_soft_mask_and_jit():
    rng = np.random.default_rng(15)
    jac = rng.normal(size=(2, H, W, C, D)).astype(np.float32)
    hard = pd.resefa(jac, REGION.astype(bool), 3)
    soft = pd.resefa(jac, REGION.astype(np.float32), 3)
    np.testing.assert_allclose(soft.values, hard.values, rtol=1e-6)
    jitted = jax.jit(lambda g: pd.resefa_from_grams(g, 3))(pd.region_grams(jac, REGION))
    np.testing.assert_allclose(jitted.values, hard.values, rtol=1e-5)


def test_resefa_errors():
    jac = np.random.default_rng(16).normal(size=(2, H, W, C, D)).astype(np.float32)
    with pytest.raises(ConfigError, match="empty"):
        pd.resefa(jac, np.zeros((H, W)))
    with pytest.raises(ConfigError, match="whole image"):
        pd.resefa(jac, np.ones((H, W)))
    with pytest.raises(ConfigError, match=r"image's shape \(4, 4\)"):
        pd.region_grams_from_fn(lambda z: jnp.zeros((H, W, C)) + z[0], jnp.ones((1, D)), np.ones((8, 8)))
    with pytest.raises(ConfigError, match="mask is 3x4"):
        pd.resefa(jac, np.ones((3, 4)))
    with pytest.raises(FeatureError, match="do not fit a 3x3 mask"):
        pd.resefa(jac.reshape(2, -1, D), np.eye(3))
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        pd.resefa(jac, REGION * 2)
    with pytest.raises(RankError, match="k = 7 is larger than the latent dimension 6"):
        pd.resefa(jac, REGION, 7)
    bad = jac.copy()
    bad[0, 1, 1, 0, 2] = np.inf
    with pytest.raises(FeatureError, match="NaN/inf"):
        pd.resefa(bad, REGION)
    with pytest.raises(FeatureError, match="NaN/inf"):
        pd.region_grams_from_fn(lambda z: jnp.sqrt(z[0] - 5.0) * jnp.ones((H, W, C)), jnp.ones((1, D)), REGION)
    with pytest.raises(ConfigError, match="tau"):
        pd.resefa(jac, REGION, tau=-1.0)
    with pytest.raises(FeatureError, match=r"\[H, W, C\]"):
        pd.region_grams_from_fn(lambda z: jnp.zeros((1, H, W, C)) + z[0], jnp.ones((1, D)), REGION)
    with pytest.raises(ConfigError, match="chunk_size"):
        pd.region_grams_from_fn(lambda z: jnp.zeros((H, W, C)) + z[0], jnp.ones((1, D)), REGION, chunk_size=0)


def test_all_errors_are_panda_errors():
    for cls in (ConfigError, FeatureError, LayerError, RankError):
        assert issubclass(cls, PandaError) and issubclass(cls, ValueError)
