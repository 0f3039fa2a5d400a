"""The baselines (SeFa, GANSpace, ReSeFa) on small cases with known answers."""


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


def test_all_errors_are_panda_errors():
    for cls in (ConfigError, FeatureError, LayerError, RankError):
        assert issubclass(cls, PandaError) and issubclass(cls, ValueError)
