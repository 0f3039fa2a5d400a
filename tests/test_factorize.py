"""The factorization against the PyTorch reference, jax.grad, and planted parts."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import panda_jax as pj
from benchmarks import torch_reference as ref
from panda_jax import factorize
from panda_jax.factorize import block_curvatures, flatten, grads, naive_loss, to_columns

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_problem(N=4, H=6, W=5, C=12, ranks=(6, 3), seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, H, W, C)).astype(np.float32)
    A = np.linalg.qr(rng.normal(size=(C, ranks[0])))[0].astype(np.float32)
    P = rng.uniform(0, 0.3, size=(H * W, ranks[1])).astype(np.float32)
    return x, pj.Factors(jnp.asarray(A), jnp.asarray(P), H, W)


def planted(scale, N=32, H=8, W=8, C=16, seed=0):
    """Four disjoint quadrant parts; each sample fills each part with its own vector."""
    rng = np.random.default_rng(seed)
    lab = (np.arange(H)[:, None] // (H // 2)) * 2 + (np.arange(W)[None, :] // (W // 2))
    means = rng.normal(size=(4, C))
    U = means[None] + 0.5 * rng.normal(size=(N, 4, C))
    Z = U[:, lab.ravel(), :].reshape(N, H, W, C)
    truth = np.stack([(lab.ravel() == k).astype(np.float64) for k in range(4)], 1)
    return (scale * Z).astype(np.float32), truth


def matched_cosines(P, truth):
    Pn = P / (np.linalg.norm(P, axis=0, keepdims=True) + 1e-12)
    Tn = truth / np.linalg.norm(truth, axis=0, keepdims=True)
    return (Tn.T @ Pn).max(axis=1)


def rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / np.abs(np.asarray(b)).max())


@pytest.mark.parametrize("ranks", [(6, 3), (10, 2)], ids=["gram-formed", "gram-not-formed"])
def test_gradients_match_jax_grad(ranks):
    # (6, 3): R_C <= N R_S, A^T A is formed; (10, 2): R_C > N R_S, A is applied twice instead
    x, f = random_problem(ranks=ranks)
    gP, gA = grads(jnp.asarray(x), f.appearance, f.parts)
    gP_ref, gA_ref = jax.grad(naive_loss, argnums=(2, 1))(jnp.asarray(x), f.appearance, f.parts)
    print("grad rel err parts", rel(gP, gP_ref), "appearance", rel(gA, gA_ref))
    assert rel(gP, gP_ref) < 1e-5 and rel(gA, gA_ref) < 1e-5
    l_fast = float(pj.loss(jnp.asarray(x), f.appearance, f.parts))
    l_naive = float(naive_loss(jnp.asarray(x), f.appearance, f.parts))
    assert abs(l_fast - l_naive) <= 1e-5 * l_naive


def test_block_curvatures_are_the_two_spectral_norms():
    # lam_S = ||sum_i Z_i^T A A^T Z_i||_2 and lam_C = ||sum_i Z_i Z_i^T||_2, Z_i = C x S, formed here.
    rng = np.random.default_rng(3)
    x = np.abs(rng.standard_normal((5, 3, 4, 6))).astype(np.float32)
    A = rng.standard_normal((6, 3)).astype(np.float32)
    Z = x.reshape(5, 12, 6).transpose(0, 2, 1).astype(np.float64)  # [N, C, S]
    lam_s = np.linalg.norm(sum(z.T @ A @ A.T @ z for z in Z), 2)
    lam_c = np.linalg.norm(sum(z @ z.T for z in Z), 2)
    got = block_curvatures(to_columns(flatten(jnp.asarray(x))), jnp.asarray(A))
    assert abs(float(got[0]) - lam_s) <= 1e-4 * lam_s and abs(float(got[1]) - lam_c) <= 1e-4 * lam_c


def test_block_curvatures_make_no_copy_of_the_features():
    # A 32 MB feature array: the compiled estimate's temporaries stay far below its size.
    S, N, C = 256, 256, 128
    Zt = jax.ShapeDtypeStruct((S, N * C), jnp.float32)
    A = jax.ShapeDtypeStruct((C, 32), jnp.float32)
    stats = block_curvatures.lower(Zt, A).compile().memory_analysis()
    assert stats.temp_size_in_bytes < 0.05 * S * N * C * 4


def _lr_for(x, f):
    lam_s, lam_c = block_curvatures(to_columns(flatten(jnp.asarray(x))), f.appearance)
    return 0.2 / float(max(lam_s, lam_c))


def test_fit_matches_torch_reference_50_steps():
    x, f = random_problem()
    lr = _lr_for(x, f)
    res = pj.fit(x, f.ranks, steps=50, lr=lr, init=f)
    Uc, Us = ref.decompose(ref.to_torch_features(x), torch.from_numpy(np.array(f.appearance)),
                           torch.from_numpy(np.asarray(f.parts)), lr, 50)
    eA, eP = rel(res.factors.appearance, Uc.numpy()), rel(res.factors.parts, Us.numpy())
    print(f"fit vs reference after 50 steps: rel err A {eA:.2e}, P {eP:.2e}")
    assert eA <= 1e-4 and eP <= 1e-4
    # the factors really moved (the comparison is not between two copies of the init)
    assert rel(res.factors.parts, f.parts) > 1e-2


@pytest.mark.parametrize("lr", [1e-3, "auto"])
def test_fit_with_the_second_layout_equals_one_layout(monkeypatch, lr):
    """On the CPU the fit also keeps the features as rows for the parts pass (``Zc P``); it must
    give the factors the one-layout fit (``P^T Zt``) gives."""
    x, f = random_problem(N=6, H=8, W=7, C=16, ranks=(5, 4), seed=3)
    Zf = flatten(jnp.asarray(x))
    assert factorize._rows_for(Zf, None) is not None  # the default on one CPU device
    two = pj.fit(x, (5, 4), steps=40, lr=lr, init=f)
    monkeypatch.setattr(factorize, "ROWS_MEMORY_FRACTION", 0.0)
    assert factorize._rows_for(Zf, None) is None
    one = pj.fit(x, (5, 4), steps=40, lr=lr, init=f)
    print("rel diff parts", rel(two.factors.parts, one.factors.parts), "appearance",
          rel(two.factors.appearance, one.factors.appearance))
    assert rel(two.factors.parts, one.factors.parts) < 1e-4
    assert rel(two.factors.appearance, one.factors.appearance) < 1e-4
    np.testing.assert_allclose(two.losses, one.losses, rtol=1e-5)


def test_fit_adam_matches_torch_autograd_variant():
    x, f = random_problem(seed=1)
    res = pj.fit(x, f.ranks, steps=30, lr=1e-2, init=f, method="adam")
    Uc, Us = ref.decompose_autograd(ref.to_torch_features(x), torch.from_numpy(np.array(f.appearance)),
                                    torch.from_numpy(np.asarray(f.parts)), 1e-2, 30)
    eA, eP = rel(res.factors.appearance, Uc.numpy()), rel(res.factors.parts, Us.numpy())
    print(f"adam vs reference after 30 steps: rel err A {eA:.2e}, P {eP:.2e}")
    assert eA <= 1e-4 and eP <= 1e-4
    assert rel(res.factors.appearance, f.appearance) > 1e-3


def test_refine_matches_torch_reference():
    x, f = random_problem(N=3, seed=2)
    lr = _lr_for(x, f)
    parts = pj.refine(x, f, steps=40, lr=lr)
    assert parts.shape == (3, 30, 3)
    Z = ref.to_torch_features(x)
    A, P = torch.from_numpy(np.array(f.appearance)), torch.from_numpy(np.asarray(f.parts))
    worst = max(rel(parts[i], ref.refine(Z[i : i + 1], A, P, lr, 40).numpy()) for i in range(3))
    print(f"refine vs reference: worst rel err {worst:.2e}")
    assert worst <= 1e-4


def test_refine_auto_lowers_each_samples_loss():
    x, f = random_problem(N=3, seed=3)
    parts = pj.refine(x, f, steps=50)
    for i in range(3):
        before = float(pj.loss(jnp.asarray(x[i : i + 1]), f.appearance, f.parts))
        after = float(pj.loss(jnp.asarray(x[i : i + 1]), f.appearance, parts[i]))
        assert after < before
        assert float(jnp.min(parts[i])) >= 0.0


def test_hosvd_matches_reference_subspace():
    x, _ = random_problem(N=8, C=10)
    A = np.asarray(pj.hosvd_init(x, 4))
    U = ref.hosvd(ref.to_torch_features(x)).numpy()[:, :4]
    # same vectors up to sign
    assert np.allclose(np.abs(np.sum(A * U, axis=0)), 1.0, atol=1e-4)


def test_hosvd_inside_jit_equals_the_host_decomposition():
    # eager: NumPy's float64 eigh on the host; under jit: JAX's eigh on the traced scatter
    x, _ = random_problem(N=8, C=10)
    A = np.asarray(pj.hosvd_init(x, 4))
    B = np.asarray(jax.jit(lambda v: pj.hosvd_init(v, 4))(jnp.asarray(x)))
    assert np.allclose(np.abs(np.sum(A * B, axis=0)), 1.0, atol=1e-4)


def test_hosvd_streaming_equals_in_memory():
    x, _ = random_problem(N=12, C=10)
    pool = jnp.asarray(x)

    def sample_fn(key, n):
        i = jax.random.fold_in(key, 0)
        return pool[jax.random.randint(i, (n,), 0, pool.shape[0])]

    # streaming over the whole pool in order gives the same scatter as in memory
    def ordered(args, key, n):
        start = jax.random.randint(key, (), 0, 3) * 0  # key unused: batches below are fixed
        return jax.lax.dynamic_slice_in_dim(args, start, n)

    A_mem = np.asarray(pj.hosvd_init(x[:4], 3))
    A_stream = np.asarray(pj.hosvd_init(ordered, 3, batches=3, batch_size=4, sample_args=pool))
    assert np.allclose(np.abs(np.sum(A_mem * A_stream, axis=0)), 1.0, atol=1e-4)
    A_rand = pj.hosvd_init(sample_fn, 3, batches=4, batch_size=4)
    assert A_rand.shape == (10, 3)


@pytest.mark.parametrize("scale", [0.01, 1.0, 100.0])
def test_planted_parts_recovered_with_defaults(scale):
    x, truth = planted(scale)
    res = pj.fit(x, (16, 4), steps=300)
    cos = matched_cosines(np.asarray(res.factors.parts), truth)
    print(f"scale {scale}: matched cosines {np.round(cos, 4)}, loss {res.losses[0]:.3g} -> {res.losses[-1]:.3g}")
    assert cos.min() >= 0.95
    assert res.losses[-1] < 1e-3 * res.losses[0]
    assert np.all(np.asarray(res.factors.parts) >= 0)


def test_fit_stream_draws_fresh_batches_and_recovers_parts():
    x, truth = planted(1.0, N=64)
    pool = jnp.asarray(x)

    def sample_fn(args, key, n):
        return args[jax.random.randint(key, (n,), 0, args.shape[0])]

    res = pj.fit_stream(sample_fn, (16, 4), steps=300, batch_size=8, sample_args=pool)
    cos = matched_cosines(np.asarray(res.factors.parts), truth)
    print("fit_stream matched cosines", np.round(cos, 4))
    assert cos.min() >= 0.95
    assert len(res.losses) == 300


def test_tol_stops_early_and_progress_runs():
    x, _ = planted(1.0)
    res = pj.fit(x, (16, 4), steps=5000, tol=1e-7, chunk=50, progress=True)
    assert res.converged and res.n_steps < 5000
    assert len(res.losses) == res.n_steps


def test_sharded_fit_equals_single_device():
    code = textwrap.dedent(
        """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
        import jax, numpy as np
        jax.config.update("jax_default_matmul_precision", "highest")
        assert jax.device_count() == 4
        sys_path = __import__("sys").path.insert(0, os.getcwd())
        import panda_jax as pj
        from tests.test_factorize import planted
        x, _ = planted(1.0, N=6)   # 6 samples: padded to 8 over 4 devices
        # A fixed step (the all-reduce only reorders sums), and the automatic step over the
        # steps where its backtracking decisions cannot flip on round-off.
        for lr, steps in ((5e-5, 50), ("auto", 15)):
            a = pj.fit(x, (16, 4), steps=steps, lr=lr, shard=True)
            b = pj.fit(x, (16, 4), steps=steps, lr=lr, shard=False)
            dA = float(np.abs(np.asarray(a.factors.appearance) - np.asarray(b.factors.appearance)).max())
            dP = float(np.abs(np.asarray(a.factors.parts) - np.asarray(b.factors.parts)).max())
            moved = float(np.abs(np.asarray(a.factors.parts)).max())
            print(lr, "max abs diff", dA, dP, "max part", moved)
            assert dA <= 1e-5 and dP <= 1e-5, (lr, dA, dP)
            assert moved > 0.05
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    print(out.stdout, out.stderr[-2000:])
    assert out.returncode == 0


def test_refine_batched_equals_one_at_a_time():
    x, f = random_problem(N=5, seed=4)
    a = pj.refine(x, f, steps=20, batch=1)
    b = pj.refine(x, f, steps=20, batch=5)
    c = pj.refine(x, f, steps=20, batch=2)
    assert float(jnp.abs(a - b).max()) <= 1e-5 and float(jnp.abs(a - c).max()) <= 1e-5
