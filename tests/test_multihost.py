"""Two processes joined by ``jax.distributed.initialize`` fit what one process fits.

The workers (tests/multihost_worker.py) run on 127.0.0.1 with CPU collectives through gloo and
two emulated CPU devices each, so ``pj.fit`` shards its samples, and ``pj.fit_stream`` its
draws, over 4 devices of 2 processes. The reference is one process on one device: ``pj.fit``
with ``shard=False``, and ``pj.fit_stream`` with the sampler that draws the 4 devices' shares in
one call (``fit_stream``'s docstring). The default run compares ``pj.fit`` with a fixed step
and ``pj.fit_stream`` with ``lr="auto"`` against the reference computed here, meanwhile; the slow
test runs both fits with both kinds of step, and the reference as a third process."""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return env


def _start(args, env):
    return subprocess.Popen([sys.executable, "-m", "tests.multihost_worker", *args], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_all(procs, names, t0):
    """Wait for every process (killing those still running at the deadline); print their logs."""
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=max(1.0, TIMEOUT_S - (time.perf_counter() - t0)))[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for name, p, out in zip(names, procs, outs):
        log = "\n".join(line for line in out.splitlines() if "[Gloo]" not in line)
        print(f"--- {name} (exit {p.returncode})\n{log[-3000:]}")
    assert [p.returncode for p in procs] == [0] * len(procs)


def _compare(a, b, r, which):
    """Both workers got the same result, that of the one-process reference; the checks refused
    what a multi-process fit cannot do."""
    for k in r:
        assert np.array_equal(a[k], b[k]), k
    assert "run in one process" in str(a["checkpoint_refused"])
    assert "not a multiple of the 4 devices" in str(a["batch_refused"])
    assert "called pj.fit with different steps" in str(a["mismatch_refused"])
    for k in which:
        dA = float(np.abs(a[k + "_A"] - r[k + "_A"]).max())
        dP = float(np.abs(a[k + "_P"] - r[k + "_P"]).max())
        dL = float(np.abs(a[k + "_losses"] - r[k + "_losses"]).max() / np.abs(r[k + "_losses"]).max())
        moved = float(np.abs(r[k + "_P"]).max())
        print(f"{k}: max abs diff A {dA:.2g} P {dP:.2g}, losses (relative) {dL:.2g}, max part {moved:.3g}")
        assert dA <= 1e-5 and dP <= 1e-5, (k, dA, dP)
        assert dL <= 1e-5, (k, dL)
        assert moved > 0.05, (k, moved)


def _two_workers(tmp_path, which):
    port = str(_free_port())
    paths = [tmp_path / "w0.npz", tmp_path / "w1.npz"]
    procs = [_start(["worker", str(i), port, str(paths[i]), ",".join(which)], _env(2)) for i in range(2)]
    return procs, paths


def test_two_processes_fit_like_one(tmp_path):
    import jax

    from tests import multihost_worker as mw

    which = ["fit_fixed", "stream_auto"]
    t0 = time.perf_counter()
    procs, paths = _two_workers(tmp_path, which)
    try:
        ref = mw.fits(False, which)  # here, on one device, while the workers run
    finally:
        _wait_all(procs, ["worker 0", "worker 1"], t0)
    print(f"two processes and the reference: {time.perf_counter() - t0:.1f} s")
    assert jax.config.jax_default_matmul_precision == "highest"  # as in the workers (tests/conftest.py)
    _compare(np.load(paths[0]), np.load(paths[1]), ref, which)


@pytest.mark.slow  # 45-80 s on a loaded 2-core machine; test_two_processes_fit_like_one is its fast part
def test_two_processes_fit_like_one_all_steps(tmp_path):
    from tests.multihost_worker import ALL

    t0 = time.perf_counter()
    procs, paths = _two_workers(tmp_path, ALL)
    procs.append(_start(["reference", str(tmp_path / "ref.npz"), ",".join(ALL)], _env(None)))
    _wait_all(procs, ["worker 0", "worker 1", "reference"], t0)
    print(f"three processes: {time.perf_counter() - t0:.1f} s")
    ref = np.load(tmp_path / "ref.npz")
    _compare(np.load(paths[0]), np.load(paths[1]), {k: ref[k] for k in ref.files}, ALL)
