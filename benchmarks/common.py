"""Timing helpers shared by the benchmarks: warm-up, synchronisation, machine facts."""

from __future__ import annotations

import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np


def machine() -> dict:
    """What the numbers were measured on."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
    }
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def time_jax(fn, *args, repeat: int = 5, warmup: int = 1) -> float:
    """Median seconds of ``fn(*args)`` after warm-up, with ``block_until_ready``."""
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def _torch_sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_torch(fn, *args, repeat: int = 3, warmup: int = 1) -> float:
    """Median seconds of ``fn(*args)`` after warm-up, synchronising CUDA if present."""
    for _ in range(warmup):
        fn(*args)
        _torch_sync()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(*args)
        _torch_sync()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def matmul_gflops(n: int = 1024, repeat: int = 5) -> float:
    """The machine's measured float32 matmul rate in GFLOP/s (JAX, n x n x n)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    t = time_jax(f, a, repeat=repeat)
    return 2 * n**3 / t / 1e9


def memory_gbps(mb: int = 256, repeat: int = 5) -> float:
    """Measured read bandwidth in GB/s (a jitted sum over ``mb`` MiB)."""
    x = jnp.ones((mb * 1024 * 1024 // 4,), jnp.float32)
    f = jax.jit(jnp.sum)
    t = time_jax(f, x, repeat=repeat)
    return x.nbytes / t / 1e9
