"""Per-iteration fit and refinement timings: panda-jax against the PyTorch reference.

    python -m benchmarks.factorize [--n 16] [--size 32] [--channels 512] [--quick]

Times, in one process and after warm-up, one full-batch iteration of Algorithm 1 (N samples
of size x size x channels, ranks 512/8) with (a) the reference in the original operation order,
(b) PyTorch with panda-jax's association of products, and (c) panda-jax; and 100 refinement
steps of one sample with R_S = 16. Prints a JSON summary.
"""

from __future__ import annotations

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import torch

import panda_jax as pj
from panda_jax.factorize import _run_chunk, flatten
from panda_jax.refine import _refine

from . import torch_reference as ref
from .common import machine, matmul_gflops, memory_gbps, time_jax, time_torch


def problem(n, size, channels, ranks, seed=0):
    rng = np.random.default_rng(seed)
    x = np.abs(rng.normal(size=(n, size, size, channels))).astype(np.float32)
    A = np.linalg.qr(rng.normal(size=(channels, ranks[0])))[0].astype(np.float32)
    P = rng.uniform(0, 0.01, size=(size * size, ranks[1])).astype(np.float32)
    return x, A, P


def fit_iteration(n=16, size=32, channels=512, ranks=(512, 8), ref_iters=2, jax_iters=20):
    x, A, P = problem(n, size, channels, ranks)
    lr = 1e-9
    Zt = ref.to_torch_features(x)
    At, Pt = torch.from_numpy(A), torch.from_numpy(P)
    t_ref = time_torch(lambda: ref.decompose(Zt, At, Pt, lr, ref_iters), repeat=1) / ref_iters
    t_fast = time_torch(lambda: ref.decompose_fast(Zt, At, Pt, lr, jax_iters), repeat=3) / jax_iters

    Zf = flatten(jnp.asarray(x))
    lr_arg = (jnp.float32(lr), jnp.float32(lr))

    def run(steps):
        state = (jnp.array(A), jnp.array(P), jnp.einsum("nsc,sr->ncr", Zf, jnp.asarray(P)), lr_arg[0] + 0, lr_arg[1] + 0)
        return _run_chunk(Zf, state, steps, lr_arg, auto=False, chunk=jax_iters)

    t_jax = time_jax(lambda: run(jax_iters)) / jax_iters

    def run_auto(steps):
        f = pj.Factors(jnp.asarray(A), jnp.asarray(P), size, size)
        return pj.fit(x, ranks, steps=steps, init=f, chunk=jax_iters).factors.parts

    t_jax_auto = time_jax(lambda: run_auto(jax_iters), repeat=3) / jax_iters
    bytes_per_pass = x.nbytes
    return {
        "shape": [n, size, size, channels],
        "ranks": list(ranks),
        "reference_original_order_s": t_ref,
        "torch_same_algebra_s": t_fast,
        "panda_jax_s": t_jax,
        "panda_jax_auto_lr_s": t_jax_auto,
        "speedup_vs_reference": t_ref / t_jax,
        "speedup_vs_torch_same_algebra": t_fast / t_jax,
        "feature_bytes": bytes_per_pass,
        "panda_jax_feature_GBps": 2 * bytes_per_pass / t_jax / 1e9,  # two passes per step
    }


def refinement(size=32, channels=512, rank_c=512, rank_s=16, steps=100, batch=1):
    x, A, P = problem(batch, size, channels, (rank_c, rank_s), seed=1)
    lr = 1e-9
    Zt = ref.to_torch_features(x)
    At, Pt = torch.from_numpy(A), torch.from_numpy(P)
    ref_steps = 10
    t_ref = time_torch(lambda: [ref.refine(Zt[i : i + 1], At, Pt, lr, ref_steps) for i in range(batch)], repeat=1) * steps / ref_steps
    Zf = flatten(jnp.asarray(x))
    t_jax = time_jax(lambda: _refine(Zf, jnp.asarray(A), jnp.asarray(P), jnp.float32(lr), steps=steps, auto=False))
    t_auto = time_jax(lambda: _refine(Zf, jnp.asarray(A), jnp.asarray(P), jnp.float32(0), steps=steps, auto=True))
    return {
        "samples": batch,
        "steps": steps,
        "shape": [size, size, channels],
        "ranks": [rank_c, rank_s],
        "reference_s": t_ref,
        "panda_jax_s": t_jax,
        "panda_jax_auto_lr_s": t_auto,
        "speedup_vs_reference": t_ref / t_jax,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="small shapes, for a smoke run")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.size, a.channels = 4, 8, 64
    out = {
        "machine": machine(),
        "matmul_gflops": matmul_gflops(),
        "memory_GBps": memory_gbps(),
        "fit_iteration": fit_iteration(a.n, a.size, a.channels, (min(512, a.channels), 8)),
        "refine_one_sample_100_steps": refinement(a.size, a.channels, min(512, a.channels), 16),
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
