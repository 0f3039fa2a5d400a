"""The one host loop behind fit and fit_stream: tol, ConvergenceWarning, progress lines,
divergence, checkpoints that survive SIGKILL, and Ctrl-C."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import panda_jax as pj
from tests.test_factorize import planted

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pool_sample_fn(args, key, n):
    return args[jax.random.randint(key, (n,), 0, args.shape[0])]


def test_tol_not_met_warns_like_scikit_learn():
    x, _ = planted(1.0, N=8)
    with pytest.warns(pj.ConvergenceWarning, match="raise steps or tol"):
        res = pj.fit(x, (8, 4), steps=20, tol=1e-12, chunk=5)
    assert not res.converged and res.n_steps == 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pj.fit(x, (8, 4), steps=20, chunk=5)  # tol=0: no warning


def test_fit_stream_has_tol_converged_and_clipped_init():
    x, _ = planted(1.0, N=32)
    pool = jnp.asarray(x)
    res = pj.fit_stream(pool_sample_fn, (16, 4), steps=3000, batch_size=8, sample_args=pool, tol=1e-3, chunk=50)
    assert res.converged and res.n_steps < 3000 and len(res.losses) == res.n_steps
    init = pj.Factors(jnp.asarray(np.linalg.qr(np.random.default_rng(0).normal(size=(16, 16)))[0], jnp.float32),
                      -jnp.ones((64, 4)), 8, 8)
    out = pj.fit_stream(pool_sample_fn, (16, 4), steps=1, batch_size=8, sample_args=pool, init=init, lr=1e-9)
    assert float(jnp.min(out.factors.parts)) >= 0.0  # the init's parts were clipped to the constraint
    bad = pj.Factors(jnp.full((16, 16), jnp.nan), jnp.ones((64, 4)), 8, 8)
    with pytest.raises(pj.FactorsError, match="NaN"):
        pj.fit_stream(pool_sample_fn, (16, 4), steps=1, batch_size=8, sample_args=pool, init=bad)


@pytest.mark.parametrize("kwargs, err, words", [
    (dict(batch_size=-3), pj.ConfigError, "batch_size"),
    (dict(batch_size=0), pj.ConfigError, "batch_size"),
    (dict(ranks=(2.7, 3)), pj.RankError, "integer"),
    (dict(tol="x"), pj.ConfigError, "tol"),
    (dict(key=5), pj.ConfigError, "jax.random key"),
    (dict(sample_fn=np.zeros(3)), pj.ConfigError, "sample_fn must be a function"),
])
def test_fit_stream_bad_input(kwargs, err, words):
    pool = jnp.ones((4, 4, 4, 3))
    call = dict(sample_fn=pool_sample_fn, ranks=(2, 2), steps=2, batch_size=2, sample_args=pool)
    call.update(kwargs)
    with pytest.raises(err, match=words):
        pj.fit_stream(**call)


@pytest.mark.parametrize("kwargs, words", [
    (dict(tol="x"), "tol"), (dict(key=5), "jax.random key"), (dict(ranks=(2.7, 3)), "integer"),
    (dict(ranks=(2, True)), "integer"), (dict(chunk=0), "chunk"),
])
def test_fit_bad_settings(kwargs, words):
    call = dict(features=np.ones((2, 4, 4, 6), np.float32), ranks=(2, 2), steps=2)
    call.update(kwargs)
    with pytest.raises(pj.PandaError, match=words):
        pj.fit(**call)


def test_progress_is_a_log_line_per_chunk_without_a_terminal(capfd):
    x, _ = planted(1.0, N=4)
    pj.fit(x, (4, 2), steps=30, chunk=10, progress=True)
    err = capfd.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("fit 8x8x16")]
    assert len(lines) == 3, err
    assert "step 30/30" in lines[-1] and "steps/s" in lines[-1] and "ETA" in lines[-1] and "loss" in lines[-1]


@pytest.mark.parametrize("lr", [1e-4, "auto"])
def test_checkpointed_fit_resumes_to_the_uninterrupted_factors(tmp_path, lr):
    x, _ = planted(1.0, N=8)
    full = pj.fit(x, (8, 4), steps=40, lr=lr, chunk=7)
    ck = tmp_path / "state"
    part = pj.fit(x, (8, 4), steps=17, lr=lr, chunk=7, checkpoint=str(ck), checkpoint_every=5)
    assert part.n_steps == 17
    with pytest.raises(pj.ConfigError, match="resume=True"):
        pj.fit(x, (8, 4), steps=40, lr=lr, checkpoint=str(ck))
    with pytest.raises(pj.ConfigError, match="another fit"):
        pj.fit(x * 2, (8, 4), steps=40, lr=lr, checkpoint=str(ck), resume=True)
    res = pj.fit(x, (8, 4), steps=40, lr=lr, chunk=7, checkpoint=str(ck), checkpoint_every=5, resume=True)
    assert res.n_steps == 40 and len(res.losses) == 40
    np.testing.assert_array_equal(res.losses[:17], part.losses)
    if lr == "auto":
        np.testing.assert_allclose(res.factors.parts, full.factors.parts, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(res.factors.appearance, full.factors.appearance, rtol=1e-6, atol=1e-7)
    else:
        np.testing.assert_array_equal(res.factors.parts, full.factors.parts)
        np.testing.assert_array_equal(res.factors.appearance, full.factors.appearance)


def test_checkpoint_refuses_a_folder_of_other_files(tmp_path):
    (tmp_path / "mine.txt").write_text("x")
    with pytest.raises(pj.ConfigError, match="holds other files"):
        pj.fit(np.ones((2, 4, 4, 6), np.float32), (2, 2), steps=2, checkpoint=str(tmp_path))
    assert os.listdir(tmp_path) == ["mine.txt"]


KILLED = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    import jax, numpy as np
    jax.config.update("jax_default_matmul_precision", "highest")
    import panda_jax as pj
    from tests.test_factorize import planted
    from tests.test_fit_loop import pool_sample_fn
    x, _ = planted(1.0, N=16)
    from tests.test_fit_loop import killed_fit
    kind, lr, resume = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
    res = killed_fit(kind, lr, checkpoint=sys.argv[4], checkpoint_every=10, resume=resume)
    np.savez(sys.argv[5], A=np.asarray(res.factors.appearance), P=np.asarray(res.factors.parts), L=res.losses)
""")


def killed_fit(kind, lr, **kw):
    x, _ = planted(1.0, N=16)
    lr = lr if lr == "auto" else float(lr)
    kw = dict(steps=120, lr=lr, chunk=4, **kw)
    if kind == "fit":
        return pj.fit(x, (16, 4), **kw)
    return pj.fit_stream(pool_sample_fn, (16, 4), batch_size=4, sample_args=jnp.asarray(x), **kw)


@pytest.mark.parametrize("kind, lr", [
    pytest.param("fit", "1e-4", marks=pytest.mark.slow),  # the fixed-lr path: test_checkpointed_fit_resumes...
    ("fit", "auto"), ("stream", "1e-4")])
def test_sigkilled_fit_resumes_to_the_uninterrupted_factors(tmp_path, kind, lr):
    script = tmp_path / "run.py"
    script.write_text(KILLED.format(root=ROOT))
    full = killed_fit(kind, lr)  # uninterrupted, in this process
    run = [sys.executable, str(script), kind, lr]
    ck = tmp_path / "ck"
    p = subprocess.Popen(run + ["0", str(ck), str(tmp_path / "never.npz")], cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it once some state is saved, mid-fit
        steps = [int(n) for n in os.listdir(ck) if n.isdigit()] if ck.is_dir() else []
        if steps and max(steps) >= 20:
            break
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    saved = max(int(n) for n in os.listdir(ck) if n.isdigit())
    assert 20 <= saved < 120, saved  # killed mid-fit
    assert not (tmp_path / "never.npz").exists()
    out = tmp_path / "resumed.npz"
    subprocess.run(run + ["1", str(ck), str(out)], check=True, timeout=300, cwd=ROOT)
    a = {"A": np.asarray(full.factors.appearance), "P": np.asarray(full.factors.parts), "L": full.losses}
    b = np.load(out)
    if lr == "auto":
        np.testing.assert_allclose(b["P"], a["P"], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(b["A"], a["A"], rtol=1e-6, atol=1e-7)
    else:
        np.testing.assert_array_equal(b["P"], a["P"])
        np.testing.assert_array_equal(b["A"], a["A"])
    np.testing.assert_array_equal(b["L"], a["L"])


def test_ctrl_c_saves_the_state_and_exits_130(tmp_path):
    from tests.helpers import BIN

    out = tmp_path / "f.npz"
    state = tmp_path / "f.fit-state"
    cmd = [BIN] if os.path.exists(BIN) else [sys.executable, "-m", "panda_jax.app.cli"]
    p = subprocess.Popen(cmd + ["fit", "default", "--layer", "2", "--ranks", "4", "2", "--samples", "8",
                                "--steps", "10000000", "--lr", "1e-6", "--checkpoint-every", "20", "--out", str(out),
                                "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not (state.is_dir() and any(state.iterdir())) and p.poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert p.poll() is None, p.communicate()
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "--resume" in lines[0] and "Traceback" not in err, err
    assert state.is_dir() and not out.exists()
    # the same command with --resume continues from the saved state (here to a nearer end)
    import re

    step = int(re.search(r"at step (\d+)", lines[0]).group(1))
    res = subprocess.run(cmd + ["fit", "default", "--layer", "2", "--ranks", "4", "2", "--samples", "8",
                                "--steps", str(step + 20), "--lr", "1e-6", "--checkpoint-every", "20", "--out",
                                str(out), "-q", "--resume"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    F = pj.load_factors(str(out))
    assert F.ranks == (4, 2) and np.all(np.isfinite(np.asarray(F.parts)))
