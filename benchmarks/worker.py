"""Measurements that need a process of their own, run by :mod:`benchmarks.run`.

    python -m benchmarks.worker scale  --n 6 --size 8 --channels 32 --ranks 32 8 --steps 20 --save F.npz
    python -m benchmarks.worker memory --stream 1 10 100 --full 1 10 ...

``scale``: the full-batch fit with samples sharded over all of ``jax.devices()``; the parent
sets ``XLA_FLAGS=--xla_force_host_platform_device_count=K`` (read only when jax starts) to
emulate K CPU devices. ``memory``: peak resident memory of fits whose total sample count is a
multiple of a base amount, streamed (``fit_stream`` with the streamed HOSVD init) or
materialised (``fit`` on all samples at once), the peak mark reset before each. Each prints
one JSON line starting with ``RESULT``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import panda_jax as pj


def _rss_now() -> int:
    """Resident set size now, in bytes (Linux ``/proc/self/statm``; else the peak so far)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return _rss_peak()


def _rss_peak() -> int:
    """Peak resident set size of this process, in bytes: ``VmHWM`` of ``/proc/self/status`` on
    Linux (the high-water mark of this process's own memory map). ``getrusage``'s ``ru_maxrss``
    is the fallback elsewhere; on Linux it is avoided because it carries the parent's peak
    across fork and exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _reset_peak() -> bool:
    """Reset the peak-RSS mark (Linux: write 5 to ``/proc/self/clear_refs``); ``False`` where
    that is not possible, and then one process can measure only one peak."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _device_peak():
    """The accelerator's own peak-bytes counter where the backend keeps one (not on CPU)."""
    try:
        stats = jax.devices()[0].memory_stats()
    except Exception:  # backends without the call
        return None
    return None if not stats else stats.get("peak_bytes_in_use")


def _emit(obj):
    print("RESULT " + json.dumps(obj), flush=True)


# ---- scale ------------------------------------------------------------------------------------


def scale(a):
    from benchmarks.factorize import problem

    x, A, P = problem(a.n, a.size, a.channels, a.ranks, seed=a.seed)
    init = pj.Factors(jnp.asarray(A), jnp.asarray(P), a.size, a.size)
    lr = a.lr

    def run():
        return pj.fit(x, a.ranks, steps=a.steps, lr=lr, init=init, chunk=a.steps)

    t = time.perf_counter()
    res = run()
    first = time.perf_counter() - t
    times = []
    for _ in range(a.repeat):
        t = time.perf_counter()
        res = run()
        times.append(time.perf_counter() - t)
    n_dev = len(jax.devices())
    np.savez(a.save, appearance=np.asarray(res.factors.appearance), parts=np.asarray(res.factors.parts),
             losses=np.asarray(res.losses))
    _emit({
        "devices": n_dev,
        "backend": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "n": a.n,
        "padded_samples": (-a.n) % n_dev,
        "steps": a.steps,
        "first_call_s": first,
        "fit_s": float(np.median(times)),
        "seconds_per_iteration": float(np.median(times)) / a.steps,
        "first_loss": float(res.losses[0]),
        "final_loss": float(res.losses[-1]),
    })


# ---- memory -----------------------------------------------------------------------------------


def _synthetic(args, key, n, *, H, W, C):
    """Features with planted parts: ``K`` spatial masks, each filled per sample with its own
    channel vector (drawn around a fixed mean), plus noise."""
    masks, means = args
    k1, k2 = jax.random.split(key)
    u = means[None] + 0.5 * jax.random.normal(k1, (n,) + means.shape)
    Z = jnp.einsum("sk,nkc->nsc", masks, u) + 0.1 * jax.random.normal(k2, (n, H * W, C))
    return jax.nn.relu(Z).reshape(n, H, W, C)


def synthetic_source(size: int, channels: int, parts: int = 4, seed: int = 0):
    """``(sample_fn, sample_args)`` drawing planted-part features ``[n, size, size, channels]``."""
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, parts, size=(size, size))
    masks = np.stack([(lab.ravel() == k) for k in range(parts)], 1).astype(np.float32)
    means = rng.normal(size=(parts, channels)).astype(np.float32)
    fn = partial(_synthetic, H=size, W=size, C=channels)
    return fn, (jnp.asarray(masks), jnp.asarray(means))


_DRAW: dict = {}


def _memory_row(a, fn, args, mode, multiple, key):
    """Draw (and for ``full``, hold) ``multiple`` times the base sample count and fit."""
    if mode == "stream":
        steps = a.steps * multiple
        hosvd_batches = a.hosvd_batches * multiple
        res = pj.fit_stream(fn, a.ranks, steps=steps, batch_size=a.batch, sample_args=args, lr=a.lr,
                            hosvd_batches=hosvd_batches, chunk=a.steps, key=key)
        return res, (steps + hosvd_batches) * a.batch, steps
    n = (a.steps + a.hosvd_batches) * a.batch * multiple
    draw = _DRAW.setdefault((fn, a.batch), jax.jit(fn, static_argnums=2))
    x = jnp.concatenate([draw(args, jax.random.fold_in(key, i), a.batch) for i in range(n // a.batch)])
    res = pj.fit(x, a.ranks, steps=a.steps, lr=a.lr, chunk=a.steps)
    return res, n, a.steps


def memory(a):
    """Peak RSS per row. Each shape runs once first (compiling its programs), then for each row
    the peak mark is reset and the row runs: its peak is that of the fit itself."""
    import gc

    fn, args = synthetic_source(a.size, a.channels)
    key = jax.random.key(0)
    jax.block_until_ready(fn(args, key, 1))
    rows = [("stream", m) for m in a.stream] + [("full", m) for m in a.full]
    sample_bytes = a.size * a.size * a.channels * 4
    out, warm = [], set()
    for mode, multiple in rows:
        # Warm-up at the row's shapes (the stream's compiled loop does not depend on the multiple).
        shape = (mode, 1 if mode == "stream" else multiple)
        if shape not in warm:
            _memory_row(a, fn, args, *shape, key)
            warm.add(shape)
        gc.collect()
        base = _rss_now()
        reset = _reset_peak()
        t = time.perf_counter()
        res, total, steps = _memory_row(a, fn, args, mode, multiple, key)
        seconds = time.perf_counter() - t
        peak = _rss_peak()
        out.append({
            "mode": mode,
            "multiple": multiple,
            "total_samples": total,
            "total_feature_bytes": total * sample_bytes,
            "batch": a.batch,
            "steps": steps,
            "baseline_rss_bytes": base,
            "peak_rss_bytes": peak,
            "peak_increase_bytes": max(0, peak - base),
            "peak_reset": reset,
            "device_peak_bytes": _device_peak(),
            "seconds": seconds,
            "final_loss_per_sample": float(res.losses[-1]) / (a.batch if mode == "stream" else total),
        })
        del res
        gc.collect()
        if not reset:
            break  # the peak mark cannot be reset: one row per process
    _emit({"rows": out, "peak_method": "VmHWM, reset per row" if out and out[0]["peak_reset"] else "process peak"})


def _lr(v: str):
    return v if v == "auto" else float(v)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scale")
    s.add_argument("--n", type=int, default=6)
    s.add_argument("--size", type=int, default=8)
    s.add_argument("--channels", type=int, default=32)
    s.add_argument("--ranks", type=int, nargs=2, default=(32, 8))
    s.add_argument("--steps", type=int, default=20)
    s.add_argument("--lr", type=float, default=1e-4)
    s.add_argument("--repeat", type=int, default=3)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--save", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--stream", type=int, nargs="*", default=[1, 10, 100], help="multiples for pj.fit_stream")
    m.add_argument("--full", type=int, nargs="*", default=[1, 10], help="multiples for pj.fit on all samples")
    m.add_argument("--size", type=int, default=16)
    m.add_argument("--channels", type=int, default=128)
    m.add_argument("--ranks", type=int, nargs=2, default=(32, 4))
    m.add_argument("--batch", type=int, default=16)
    m.add_argument("--steps", type=int, default=4, help="fit steps at multiple 1 (stream: times the multiple)")
    m.add_argument("--hosvd-batches", type=int, default=2, help="HOSVD batches at multiple 1")
    m.add_argument("--lr", type=_lr, default="auto")
    a = ap.parse_args(argv)
    scale(a) if a.cmd == "scale" else memory(a)


if __name__ == "__main__":
    main()
