"""One process of the multi-process fit test (tests/test_multihost.py), or its one-process reference.

    python -m tests.multihost_worker worker PROCESS_ID PORT OUT.npz FITS   # 2 processes, 2 CPU devices each
    python -m tests.multihost_worker reference OUT.npz FITS                # 1 process, 1 device

Each runs the same fits (``FITS``: e.g. ``fit_fixed,stream_auto``: ``pj.fit`` or
``pj.fit_stream`` with a fixed step or ``lr="auto"``) and saves their factors. The workers join
through ``jax.distributed.initialize`` on 127.0.0.1 (CPU collectives via gloo) and see 4
devices: ``pj.fit`` gets the same features in both (6 samples, padded to 8) and
``pj.fit_stream`` lets each device draw its own 2 of a global batch of 8. The reference runs
``pj.fit`` on one device and ``pj.fit_stream`` on one device with :func:`union_sample_fn`, the
sampler that draws the 4 devices' shares in one call (the definition in ``fit_stream``'s
docstring). The workers also check what a multi-process call must refuse.
"""

from __future__ import annotations

import sys
import time

T0 = time.perf_counter()
import jax

DEVICES = 4  # global device count of the two workers
STEPS = {"fixed": 50, "auto": 15}  # as tests/test_factorize.py::test_sharded_fit_equals_single_device
LR_FIXED = 5e-5


def pool_sample_fn(args, key, n):
    return args[jax.random.randint(key, (n,), 0, args.shape[0])]


def union_sample_fn(args, key, n):
    """The global batch of a fit sharded over ``DEVICES`` devices, drawn by one: device ``d``'s
    share is ``pool_sample_fn(args, fold_in(key, d), n // DEVICES)``."""
    import jax.numpy as jnp

    return jnp.concatenate([pool_sample_fn(args, jax.random.fold_in(key, d), n // DEVICES) for d in range(DEVICES)])


def planted(N, H=8, W=8, C=16, seed=0):
    """Four quadrant parts, each filled per sample with its own vector (as tests/test_factorize.py's
    ``planted``, here without importing that module and torch with it)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lab = (np.arange(H)[:, None] // (H // 2)) * 2 + (np.arange(W)[None, :] // (W // 2))
    U = rng.normal(size=(4, C))[None] + 0.5 * rng.normal(size=(N, 4, C))
    return U[:, lab.ravel(), :].reshape(N, H, W, C).astype(np.float32)


ALL = ("fit_fixed", "fit_auto", "stream_fixed", "stream_auto")


def fits(sharded: bool, which=ALL) -> dict:
    import jax.numpy as jnp
    import numpy as np

    import panda_jax as pj

    x = planted(N=6)  # 6 samples: padded to 8 over 4 devices
    pool = planted(N=32, seed=1)
    pool = jnp.asarray(pool)
    out = {}
    for name in which:
        kind, lr_name = name.split("_")
        lr = LR_FIXED if lr_name == "fixed" else "auto"
        t = time.perf_counter()
        if kind == "fit":
            res = pj.fit(x, (16, 4), steps=STEPS[lr_name], lr=lr, shard=sharded)
        else:
            # R_C = 4: the leading eigenvectors of the streamed scatter are well separated. The
            # sharded fit sums the scatter in another order, and eigenvectors inside the noise
            # cluster (R_C = 16 of 16 channels) would turn by that round-off, not by any fault.
            res = pj.fit_stream(pool_sample_fn if sharded else union_sample_fn, (4, 4), steps=STEPS[lr_name],
                                batch_size=8, lr=lr, sample_args=pool, hosvd_batches=3, shard=sharded)
        out[f"{name}_A"], out[f"{name}_P"] = np.asarray(res.factors.appearance), np.asarray(res.factors.parts)
        out[f"{name}_losses"] = res.losses
        print(f"{name}: {time.perf_counter() - t:.1f} s", flush=True)
    return out


def main(argv):
    import os

    import numpy as np

    print(f"jax imported after {time.perf_counter() - T0:.1f} s", flush=True)
    role = argv[0]
    if role == "worker":
        pid, port, path, which = int(argv[1]), argv[2], argv[3], argv[4]
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid,
                                   initialization_timeout=60)
        assert jax.process_count() == 2 and jax.device_count() == DEVICES and jax.local_device_count() == 2
    else:
        path, which = argv[1], argv[2]
        assert jax.device_count() == 1
    jax.config.update("jax_default_matmul_precision", "highest")
    sys.path.insert(0, os.getcwd())
    out = fits(role == "worker", which.split(","))
    if role == "worker":
        import tempfile

        import panda_jax as pj

        x = planted(N=6)
        try:  # 4 devices draw a global batch of 8, not of 6
            pj.fit_stream(pool_sample_fn, (4, 4), steps=2, batch_size=6, sample_args=x)
        except pj.ConfigError as e:
            out["batch_refused"] = np.array(str(e))
        try:  # another number of steps in each process: refused before any collective could wait for ever
            pj.fit(x, (16, 4), steps=2 + pid, lr=LR_FIXED)
        except pj.ConfigError as e:
            out["mismatch_refused"] = np.array(str(e))
        with tempfile.TemporaryDirectory() as d:
            try:
                pj.fit(x, (16, 4), steps=2, lr=LR_FIXED, checkpoint=os.path.join(d, f"ck{pid}"))
            except pj.ConfigError as e:
                out["checkpoint_refused"] = np.array(str(e))
        jax.distributed.shutdown()
    np.savez(path, **out)


if __name__ == "__main__":
    main(sys.argv[1:])
