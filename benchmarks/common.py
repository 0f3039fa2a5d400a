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


RESULTS_MD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def own_sections(doc: str) -> list[str]:
    """The ``## ...`` sections of a RESULTS.md that other scripts write (their heading names the
    script, e.g. ``(`python -m benchmarks.gen_speed`)``), in order."""
    import re

    starts = [m.start() for m in re.finditer(r"(?m)^## ", doc)]
    out = []
    for k, s in enumerate(starts):
        end = starts[k + 1] if k + 1 < len(starts) else len(doc)
        head = doc[s:end].split("\n", 1)[0]
        if "`python -m benchmarks." in head and "benchmarks.run" not in head:
            out.append(doc[s:end].rstrip() + "\n")
    return out


def replace_section(heading: str, text: str, path: str = RESULTS_MD) -> None:
    """Replace the section that starts with ``heading`` in RESULTS.md by ``text`` (or append it),
    leaving every other section as it is; written atomically."""
    with open(path) as f:
        doc = f.read()
    if heading in doc:
        start = doc.index(heading)
        nxt = doc.find("\n## ", start + len(heading))
        doc = doc[:start] + text.rstrip() + "\n" + (doc[nxt:] if nxt >= 0 else "")
    else:
        doc = doc.rstrip() + "\n\n" + text.rstrip() + "\n"
    from panda_jax._io import atomic_write

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(doc)

    atomic_write(path, write)
