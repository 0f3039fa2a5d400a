"""Edits, saliency, masks, ROIR, factor files and bad input, on small hand-checked cases."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

import panda_jax as pj


def tiny_factors():
    # C = 3 channels, a 2 x 3 layer, 2 appearances, 2 parts
    A = jnp.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    P = jnp.array([[2.0, 0.0], [1.0, 0.0], [0.0, 0.0], [0.0, 1.0], [0.0, 3.0], [0.0, 0.0]])
    return pj.Factors(A, P, 2, 3, {"model": "toy", "layer": 1})


def test_part_map_is_min_max_normalised_sum():
    f = tiny_factors()
    np.testing.assert_allclose(pj.part_map(f, 0), [[1.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
    # parts summed, then normalised: [2, 1, 0, 1, 3, 0] / 3
    np.testing.assert_allclose(pj.part_map(f, [0, 1]), np.array([[2, 1, 0], [1, 3, 0]]) / 3.0, rtol=1e-6)


def test_edit_adds_appearance_at_part():
    f = tiny_factors()
    Z = jnp.zeros((2, 2, 3, 3))
    out = pj.edit(Z, f, part=0, appearance=1, alpha=4.0)
    want = np.zeros((2, 3, 3))
    want[0, 0, 1], want[0, 1, 1] = 4.0, 2.0
    np.testing.assert_allclose(out[0], want)
    np.testing.assert_allclose(out[1], want)


def test_several_triples_sum_and_mask_replaces_part():
    f = tiny_factors()
    Z = jnp.ones((1, 2, 3, 3))
    out = pj.edit(Z, f, part=[0, 1], appearance=[0, 1], alpha=[1.0, -3.0])
    d = np.asarray(out[0] - 1.0)
    np.testing.assert_allclose(d[..., 0], [[1.0, 0.5, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(d[..., 1], -3.0 * np.array([[0, 0, 0], [1 / 3, 1.0, 0]]), rtol=1e-6)
    mask = jnp.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    out = pj.edit(Z, f, appearance=0, alpha=2.0, mask=mask)
    np.testing.assert_allclose(out[0, ..., 0] - 1.0, 2.0 * mask)


def test_edit_sweep_batches_alphas():
    f = tiny_factors()
    Z = jnp.zeros((2, 2, 3, 3))
    out = pj.edit_sweep(Z, f, part=1, appearance=0, alphas=[-1.0, 0.0, 2.0])
    assert out.shape == (3, 2, 2, 3, 3)
    np.testing.assert_allclose(out[2, 0, 1, 1, 0], 2.0)
    np.testing.assert_allclose(out[0, 1, 1, 1, 0], -1.0)
    assert float(jnp.abs(out[1]).max()) == 0.0


def test_saliency_and_localize_mean_threshold():
    f = tiny_factors()
    Z = jnp.arange(2 * 2 * 3 * 3, dtype=jnp.float32).reshape(2, 2, 3, 3)
    s = pj.saliency(Z, f)
    assert s.shape == (2, 2, 3, 2)
    np.testing.assert_allclose(s[..., 0], Z[..., 0])
    np.testing.assert_allclose(s[..., 1], Z[..., 1])
    m = pj.localize(s)
    assert m.dtype == bool
    # mean of channel 0 over everything is 16.5: the second sample is above it
    assert not bool(m[0, ..., 0].any()) and bool(m[1, ..., 0].all())
    m2 = pj.localize(s, threshold=jnp.array([0.0, 100.0]))
    assert bool(m2[..., 0].all()) and not bool(m2[..., 1].any())


def test_remove_background():
    imgs = jnp.zeros((1, 4, 4, 3))
    bg = jnp.zeros((1, 2, 2), bool).at[0, 0, 0].set(True)  # low-res mask, resized
    out = pj.remove_background(imgs, bg)
    assert float(out[0, :2, :2].min()) == 1.0 and float(out[0, 2:, :].max()) == 0.0


def test_roir_is_eq7_outside_over_inside_frobenius():
    x = jnp.zeros((2, 2, 2, 1))
    # sample 0: inside (0,0) changes by 3; outside (0,1) by 2 and (1,1) by 1
    # sample 1: inside changes by 2; outside (0,1) by 2
    y = x.at[0, 0, 0, 0].set(3.0).at[0, 0, 1, 0].set(2.0).at[0, 1, 1, 0].set(1.0)
    y = y.at[1, 0, 0, 0].set(2.0).at[1, 0, 1, 0].set(2.0)
    mask = jnp.array([[1.0, 0.0], [0.0, 0.0]])
    # Eq. 7: ||(1-M)(X-X')||_F / ||M(X-X')||_F per sample: sqrt(2^2 + 1^2) / 3 and 2 / 2
    per = [np.sqrt(5.0) / 3.0, 1.0]
    np.testing.assert_allclose(pj.roir(mask, x, y, per_sample=True), per, rtol=1e-6)
    assert float(pj.roir(mask, x, y)) == pytest.approx(np.mean(per), rel=1e-6)  # 0.8727: lower is more local
    # an edit that stays inside the region scores 0; one that leaks more scores higher
    assert float(pj.roir(mask, x, x.at[:, 0, 0, 0].set(1.0))) == 0.0
    assert float(pj.roir(mask, x, y.at[:, 1, 0, 0].set(5.0))) > float(pj.roir(mask, x, y))
    # one sample, and a per-sample mask
    assert float(pj.roir(mask, x[0], y[0])) == pytest.approx(per[0], rel=1e-6)
    assert float(pj.roir(jnp.stack([mask, mask]), x, y)) == pytest.approx(np.mean(per), rel=1e-6)
    with pytest.raises(pj.ConfigError, match="mask must be"):
        pj.roir(jnp.ones((3, 3)), x, y)
    with pytest.raises(pj.ConfigError, match="empty or covers the whole image"):
        pj.roir(jnp.zeros((2, 2)), x, y)
    with pytest.raises(pj.ConfigError, match="empty or covers the whole image"):
        pj.roir(jnp.ones((2, 2)), x, y)


def test_factors_round_trip(tmp_path):
    f = tiny_factors()
    path = pj.save_factors(str(tmp_path / "f.npz"), f)
    g = pj.load_factors(path)
    np.testing.assert_array_equal(g.appearance, f.appearance)
    np.testing.assert_array_equal(g.parts, f.parts)
    assert (g.height, g.width, g.meta) == (2, 3, {"model": "toy", "layer": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["f.npz"]  # no temporary left behind


def test_original_npy_pair_both_ways(tmp_path):
    A = np.random.default_rng(0).normal(size=(8, 5)).astype(np.float32)
    P = np.abs(np.random.default_rng(1).normal(size=(16, 3))).astype(np.float32)
    uc = tmp_path / "Uc-name_stylegan2_ffhq1024-layer_5-rank_5.npy"
    us = tmp_path / "Us-name_stylegan2_ffhq1024-layer_5-rank_3.npy"
    np.save(uc, A)
    np.save(us, P)
    f = pj.load_original(str(uc), str(us))
    assert (f.height, f.width) == (4, 4)
    assert f.meta == {"model": "stylegan2_ffhq1024", "layer": 5}
    out = tmp_path / "out"
    p1, p2 = pj.save_original(str(out), f)
    assert os.path.basename(p1) == uc.name and os.path.basename(p2) == us.name
    np.testing.assert_array_equal(np.load(p1), A)
    np.testing.assert_array_equal(np.load(p2), P)


def test_metrics():
    f = tiny_factors()
    stats = pj.part_stats(f)
    assert stats["parts"][0]["centroid"] == pytest.approx((0.0, 1 / 3))
    assert stats["mean_max_overlap"] == 0.0
    Z = jnp.ones((1, 2, 3, 3))
    e = pj.reconstruction_error(Z, f)
    A, P = np.asarray(f.appearance), np.asarray(f.parts)
    Zi = np.ones((3, 6))
    want = np.sum((Zi - A @ A.T @ Zi @ P @ P.T) ** 2) / Zi.size
    assert e == pytest.approx(want, rel=1e-6)


# ---- bad input -------------------------------------------------------------------------------

GOOD = np.random.default_rng(0).normal(size=(2, 4, 4, 6)).astype(np.float32)


@pytest.mark.parametrize(
    "kwargs, err, words",
    [
        (dict(features=GOOD[0], ranks=(2, 2)), pj.FeatureError, "4-D"),
        (dict(features=np.where(np.arange(6) == 2, np.nan, GOOD), ranks=(2, 2)), pj.FeatureError, "NaN"),
        (dict(features=np.where(np.arange(6) == 2, np.inf, GOOD), ranks=(2, 2)), pj.FeatureError, "NaN/inf"),
        (dict(features=GOOD, ranks=(7, 2)), pj.RankError, "R_C = 7"),
        (dict(features=GOOD, ranks=(2, 17)), pj.RankError, "R_S = 17"),
        (dict(features=GOOD, ranks=(0, 2)), pj.RankError, "positive"),
        (dict(features=GOOD, ranks=(2, 2), steps=0), pj.ConfigError, "steps"),
        (dict(features=GOOD, ranks=(2, 2), lr=-1.0), pj.ConfigError, "lr"),
        (dict(features=GOOD, ranks=(2, 2), lr="fast"), pj.ConfigError, "lr"),
        (dict(features=GOOD, ranks=(2, 2), method="sgd"), pj.ConfigError, "method"),
        (dict(features=GOOD, ranks=(2, 2), init=pj.Factors(np.zeros((6, 2)), np.zeros((9, 2)), 3, 3)),
         pj.FactorsError, "3x3"),
    ],
)
def test_bad_fit_input_gets_a_named_error(kwargs, err, words):
    with pytest.raises(err) as e:
        pj.fit(**kwargs)
    assert words in str(e.value)
    assert isinstance(e.value, pj.PandaError)


def test_divergence_names_step_and_size():
    with pytest.raises(pj.DivergenceError, match=r"step \d+ with step size 1000.0"):
        pj.fit(GOOD * 100, (3, 2), steps=20, lr=1e3)


def test_bad_factors_and_files(tmp_path):
    f = tiny_factors()
    with pytest.raises(pj.FactorsError, match="2x3x3"):
        pj.saliency(np.zeros((1, 4, 4, 3), np.float32), f)
    with pytest.raises(pj.ConfigError, match="part index 5"):
        pj.edit(np.zeros((1, 2, 3, 3), np.float32), f, part=5, appearance=0)
    with pytest.raises(pj.ConfigError, match="appearance index 9"):
        pj.edit(np.zeros((1, 2, 3, 3), np.float32), f, part=0, appearance=9)
    with pytest.raises(pj.FactorsError, match="does not exist"):
        pj.load_factors(str(tmp_path / "missing.npz"))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file at all")
    with pytest.raises(pj.FactorsError, match="not a panda-jax factors file"):
        pj.load_factors(str(junk))
    np.save(tmp_path / "uc.npy", np.zeros((4, 2), np.float32))
    np.save(tmp_path / "us.npy", np.zeros((10, 2), np.float32))
    with pytest.raises(pj.FactorsError, match="not a square layer"):
        pj.load_original(str(tmp_path / "uc.npy"), str(tmp_path / "us.npy"))
    with pytest.raises(pj.FactorsError, match="2-D float"):
        np.save(tmp_path / "bad.npy", np.zeros((3,), np.float32))
        pj.load_original(str(tmp_path / "bad.npy"), str(tmp_path / "us.npy"))


def test_generators_load_by_zoo_name(tmp_path, monkeypatch):
    import ported_gens

    monkeypatch.setenv("PANDA_JAX_MODELS", str(tmp_path))
    with pytest.raises(pj.CheckpointError, match="panda-jax convert CHECKPOINT .*stylegan2_ffhq1024"):
        ported_gens.load("stylegan2_ffhq1024")
    with pytest.raises(pj.CheckpointError, match="not a converted model directory"):
        ported_gens.load(str(tmp_path))


def test_sliced_wasserstein_hand_checked():
    import jax

    from panda_jax.metrics import sliced_wasserstein

    a = jnp.asarray(np.random.default_rng(0).normal(size=(64, 3)), jnp.float32)
    shift = jnp.array([1.0, -2.0, 0.5])
    key = jax.random.key(3)
    # A shifted copy: every projection moves by <shift, d>, so sorting keeps the pairs and the
    # distance is the mean over directions of |<shift, d>|.
    dirs = [jax.random.normal(k, (3, 16)) for k in jax.random.split(key, 2)]
    want = np.mean([np.mean(np.abs(np.asarray(shift) @ (d / jnp.linalg.norm(d, axis=0, keepdims=True)))) for d in dirs])
    got = float(sliced_wasserstein(a, a + shift[None], key, directions=16, repeats=2))
    assert got == pytest.approx(want, rel=1e-5)
    assert float(sliced_wasserstein(a, a[::-1], key)) == pytest.approx(0.0, abs=1e-6)  # same set, other order


def test_swd_levels_and_ordering():
    import jax

    rng = np.random.default_rng(0)
    # smooth random fields (4x4 noise upsampled) against white noise
    x = jax.image.resize(jnp.asarray(rng.uniform(-1, 1, size=(16, 4, 4, 3)), jnp.float32), (16, 32, 32, 3), "cubic")
    blurred = jnp.asarray(rng.uniform(-1, 1, size=x.shape), jnp.float32)
    small = dict(per_image=128, directions=128)
    same = pj.swd(x, x, jax.random.key(0), **small)
    near = pj.swd(x, jnp.clip(x + 0.02 * jnp.asarray(rng.normal(size=x.shape), jnp.float32), -1, 1),
                  jax.random.key(0), **small)
    far = pj.swd(x, blurred, jax.random.key(0), **small)
    assert same["levels"] == [32, 16] and len(same["per_level"]) == 2
    # descriptors are drawn independently for the two sets, so a set against itself scores the
    # sampling noise; a blurred set is far beyond it
    assert pj.swd(x, x, jax.random.key(0), **small) == same
    assert far["mean"] > 3 * same["mean"] and near["mean"] < far["mean"]
    with pytest.raises(pj.ConfigError, match="one shape"):
        pj.swd(x, x[:3], jax.random.key(0))


def test_swd_host_sort_equals_the_jax_sliced_wasserstein():
    """swd sorts its projections in NumPy; on the same descriptors and key it gives what the
    jittable sliced_wasserstein gives."""
    import jax

    from panda_jax.metrics import _swd_descriptors, sliced_wasserstein

    rng = np.random.default_rng(1)
    a = jnp.asarray(rng.uniform(-1, 1, size=(6, 32, 32, 3)), jnp.float32)
    b = jnp.asarray(rng.uniform(-1, 1, size=(6, 32, 32, 3)), jnp.float32) * 0.5
    key = jax.random.key(3)
    got = pj.swd(a, b, key, per_image=16, directions=16, repeats=2)
    descs = _swd_descriptors(a, b, key, levels=2, per_image=16, patch=7)
    for lev, (da, db) in enumerate(descs):
        k_s = jax.random.split(jax.random.fold_in(key, lev), 3)[2]
        want = float(sliced_wasserstein(da, db, k_s, directions=16, repeats=2)) * 1e3
        assert got["per_level"][lev] == pytest.approx(want, rel=1e-4)
