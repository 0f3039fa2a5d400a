"""The public per-sample functions compose with jit, vmap and grad (as a JAX library's must),
value checks run on concrete input and, under pj.checked, inside traces; the core imports
nothing heavy."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import panda_jax as pj

N, H, W, C = 3, 4, 5, 6


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    Z = jnp.asarray(rng.normal(size=(N, H, W, C)).astype(np.float32))
    A = jnp.asarray(np.linalg.qr(rng.normal(size=(C, 3)))[0].astype(np.float32))
    P = jnp.asarray(rng.uniform(0, 1, size=(H * W, 4)).astype(np.float32))
    F = pj.Factors(A, P, H, W)
    imgs = jnp.asarray(rng.normal(size=(N, 8, 10, 3)).astype(np.float32))
    edited = imgs + jnp.asarray(rng.normal(size=imgs.shape).astype(np.float32))
    mask = jnp.zeros((8, 10)).at[2:6, 3:7].set(1.0)
    return Z, F, imgs, edited, mask


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


# Each case: a per-sample function f(z) of one sample [H, W, C] (or one image), its eager batched
# form g(Z) over all samples, and what to feed it.
def cases(F, mask, imgs, edited):
    thr = jnp.zeros((3,))
    return {
        "edit": (lambda z: pj.edit(z, F, part=1, appearance=2, alpha=2.0),
                 lambda Z: pj.edit(Z, F, part=1, appearance=2, alpha=2.0)),
        "edit several": (lambda z: pj.edit(z, F, part=[0, [1, 2]], appearance=[0, 1], alpha=[1.0, -2.0]),
                         lambda Z: pj.edit(Z, F, part=[0, [1, 2]], appearance=[0, 1], alpha=[1.0, -2.0])),
        "edit mask": (lambda z: pj.edit(z, F, appearance=1, alpha=3.0, mask=mask),
                      lambda Z: pj.edit(Z, F, appearance=1, alpha=3.0, mask=mask)),
        "edit_sweep": (lambda z: pj.edit_sweep(z, F, part=0, appearance=1, alphas=[-1.0, 2.0]),
                       lambda Z: jnp.moveaxis(pj.edit_sweep(Z, F, part=0, appearance=1, alphas=[-1.0, 2.0]), 1, 0)),
        "saliency": (lambda z: pj.saliency(z, F), lambda Z: pj.saliency(Z, F)),
        "localize": (lambda z: pj.localize(pj.saliency(z, F), threshold=thr),
                     lambda Z: pj.localize(pj.saliency(Z, F), threshold=thr)),
        "refine": (lambda z: pj.refine(z, F, steps=5), lambda Z: pj.refine(Z, F, steps=5)),
        "refine fixed lr": (lambda z: pj.refine(z, F, steps=5, lr=1e-3), lambda Z: pj.refine(Z, F, steps=5, lr=1e-3)),
        "reconstruction_error": (lambda z: pj.reconstruction_error(z, F),
                                 lambda Z: jnp.stack([pj.reconstruction_error(Z[i:i + 1], F) for i in range(N)])),
    }


def test_per_sample_functions_under_jit_and_vmap(data):
    Z, F, imgs, edited, mask = data
    for name, (f, g) in cases(F, mask, imgs, edited).items():
        eager = g(Z)
        close(jax.jit(g)(Z), eager)
        close(jax.vmap(f)(Z), eager)
        close(jax.jit(jax.vmap(f))(Z), eager)
        assert np.asarray(jax.vmap(f)(Z)).dtype == np.asarray(eager).dtype, name


def test_part_map_remove_background_and_roir_under_transforms(data):
    Z, F, imgs, edited, mask = data
    close(jax.jit(lambda: pj.part_map(F, [1, 3]))(), pj.part_map(F, [1, 3]))
    bg = jnp.asarray(np.random.default_rng(1).uniform(size=(N, 4, 5)) > 0.5)
    eager = pj.remove_background(imgs, bg)
    close(jax.jit(pj.remove_background)(imgs, bg), eager)
    close(jax.vmap(pj.remove_background)(imgs, bg), eager)
    per = pj.roir(mask, imgs, edited, per_sample=True)
    close(jax.vmap(lambda x, y: pj.roir(mask, x, y))(imgs, edited), per)
    close(jax.jit(lambda x, y: pj.roir(mask, x, y))(imgs, edited), jnp.mean(per))
    close(jax.jit(lambda m, x, y: pj.roir(m, x, y))(mask, imgs, edited), jnp.mean(per))


def test_vmap_over_alpha_and_grad(data):
    Z, F, *_ = data
    alphas = jnp.array([-2.0, 0.5, 3.0])
    swept = jax.vmap(lambda a: pj.edit(Z, F, part=1, appearance=2, alpha=a))(alphas)
    close(swept, pj.edit_sweep(Z, F, part=1, appearance=2, alphas=alphas))
    # d/dalpha sum(edit) = sum(p_1 a_2) per sample: the direction's sum times N
    g = jax.grad(lambda a: jnp.sum(pj.edit(Z, F, part=1, appearance=2, alpha=a)))(1.5)
    close(g, N * jnp.sum(pj.direction(F, part=1, appearance=2, alpha=1.0)))
    gz = jax.grad(lambda z: jnp.sum(pj.edit(z, F, part=0, appearance=0, alpha=2.0) ** 2))(Z)
    close(gz, 2 * pj.edit(Z, F, part=0, appearance=0, alpha=2.0))
    gr = jax.grad(lambda z: pj.reconstruction_error(z, F, relative=False))(Z)
    assert np.isfinite(np.asarray(gr)).all() and float(jnp.abs(gr).max()) > 0


def test_value_checks_on_concrete_input_and_under_checked(data):
    Z, F, *_ = data
    bad = Z.at[0, 0, 0, 0].set(jnp.nan)
    with pytest.raises(pj.FeatureError, match="1 NaN/inf"):
        pj.edit(bad, F, part=0, appearance=0, alpha=1.0)
    with pytest.raises(pj.ConfigError, match="alpha"):
        pj.edit(Z, F, part=0, appearance=0, alpha=float("nan"))
    # traced: no host sync, no error by default ...
    out = jax.jit(lambda z: pj.edit(z, F, part=0, appearance=0, alpha=1.0))(bad)
    assert np.isnan(np.asarray(out)).any()
    # ... and a checkify error under pj.checked
    err, _ = jax.jit(pj.checked(lambda z: pj.edit(z, F, part=0, appearance=0, alpha=1.0)))(bad)
    with pytest.raises(Exception, match="NaN/inf"):
        err.throw()
    err, out = jax.jit(pj.checked(lambda z: pj.edit(z, F, part=0, appearance=0, alpha=1.0)))(Z)
    err.throw()  # finite input: no error
    close(out, pj.edit(Z, F, part=0, appearance=0, alpha=1.0))


def test_static_checks_run_under_tracing(data):
    Z, F, *_ = data
    with pytest.raises(pj.ConfigError, match="part index 7"):
        jax.jit(lambda z: pj.edit(z, F, part=7, appearance=0, alpha=1.0))(Z)
    with pytest.raises(pj.FactorsError, match="factors are for"):
        jax.vmap(lambda z: pj.saliency(z, F))(Z[:, :, :4])


def test_import_panda_jax_loads_nothing_heavy():
    code = (
        "import sys, panda_jax\n"
        "heavy = ('torch', 'flax', 'ported_gens', 'convert', 'matplotlib', 'PIL', 'orbax', 'optax', 'panda_jax.app')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m.startswith('panda_jax.app')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout
