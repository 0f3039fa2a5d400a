"""Full-batch fit and refinement timings: panda-jax against the PyTorch reference.

    python -m benchmarks.factorize [--n 16] [--size 32] [--channels 512] [--quick]

Times, in one process and after warm-up, one full-batch iteration of Algorithm 1 (N samples
of size x size x channels, ranks 512/8) with (a) the reference in the original operation order,
(b) PyTorch with panda-jax's association of products, and (c) panda-jax; and 100 refinement
steps of one sample with R_S = 16. Prints a JSON summary. ``python -m benchmarks.run`` runs
these measurements (and more) over sweeps and writes a report.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

import panda_jax as pj
from panda_jax.factorize import AUTO_STEP, PGDState, _parts_pass, _run_chunk, block_curvatures, flatten, init_parts, to_columns
from panda_jax.refine import _refine

from . import cost
from . import torch_reference as ref
from .common import machine, matmul_gflops, memory_gbps, time_jax, time_torch


def torch_setup() -> dict:
    """Make PyTorch flush denormals to zero as XLA's CPU backend does. Without it, inputs whose
    products underflow run the reference up to a hundred times slower on the CPU (measured),
    which is not what an engine comparison should show. Returns the settings for the report."""
    flushed = bool(torch.set_flush_denormal(True))
    out = {"torch_flush_denormal": flushed, "torch_threads": torch.get_num_threads(), "torch_device": torch_device()}
    if torch.cuda.is_available():
        out["torch_allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    return out


def torch_device() -> str:
    """Where the torch engines run: the GPU when torch sees one, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _torch_inputs(x, A, P):
    """Features in the original's ``[N, C, S]`` layout and the factors, as torch tensors on
    :func:`torch_device` (copies: numpy arrays from JAX are read-only)."""
    dev = torch_device()
    return (ref.to_torch_features(x).to(dev), torch.tensor(np.asarray(A), device=dev),
            torch.tensor(np.asarray(P), device=dev))


def time_torch_budget(fn, budget_s: float = 2.0, max_repeat: int = 5) -> float:
    """``time_torch`` with as many repeats as fit in ``budget_s`` after one warm-up call
    (at least one): expensive reference calls get one, cheap ones several (median)."""
    t = time.perf_counter()
    fn()
    first = time.perf_counter() - t
    repeat = int(max(1, min(max_repeat, budget_s // max(first, 1e-9))))
    return time_torch(fn, repeat=repeat, warmup=0)


def compiled_memory(jitted, *args, **kwargs) -> dict | None:
    """XLA's own accounting of one compiled program (``memory_analysis``): bytes of arguments,
    outputs and temporaries (buffers the program allocates while it runs). Measured by the
    compiler for the exact shapes, on every backend; ``None`` where it is unavailable. After a
    call with the same shapes this reuses the compiled program."""
    spec = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a))
                                  if isinstance(a, (jax.Array, np.ndarray)) else a, args)
    try:
        m = jitted.lower(*spec, **kwargs).compile().memory_analysis()
    except Exception:  # backends or versions without it
        return None
    if m is None:
        return None
    return {
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "temp_bytes": int(m.temp_size_in_bytes),
    }


def time_jax_budget(fn, budget_s: float = 5.0, max_repeat: int = 5) -> float:
    """``time_jax`` with as many repeats as fit in ``budget_s`` after one warm-up call."""
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    repeat = int(max(1, min(max_repeat, budget_s // max(first, 1e-9))))
    return time_jax(fn, repeat=repeat, warmup=0)


def problem(n, size, channels, ranks, seed=0):
    """Random non-negative features ``[n, size, size, channels]``, orthonormal ``A``, small ``P``."""
    rng = np.random.default_rng(seed)
    x = np.abs(rng.normal(size=(n, size, size, channels))).astype(np.float32)
    A = np.linalg.qr(rng.normal(size=(channels, ranks[0])))[0].astype(np.float32)
    P = rng.uniform(0, 0.01, size=(size * size, ranks[1])).astype(np.float32)
    return x, A, P


def _rates(flops, nbytes, seconds, rates):
    """Achieved GFLOP/s and feature GB/s, and their fractions of the machine's measured rates."""
    if not seconds or seconds <= 0:
        return {}
    out = {"gflops": flops / seconds / 1e9}
    if nbytes is not None:
        out["feature_GBps"] = nbytes / seconds / 1e9
    if rates:
        if rates.get("matmul_gflops"):
            out["frac_matmul"] = out["gflops"] / rates["matmul_gflops"]
        if nbytes is not None and rates.get("memory_GBps"):
            out["frac_bandwidth"] = out["feature_GBps"] / rates["memory_GBps"]
        if nbytes is not None and rates.get("matmul_gflops") and rates.get("memory_GBps"):
            # The roofline: no engine beats reading the features at the measured bandwidth, nor
            # doing the products at the measured matmul rate; the larger of the two bounds a step.
            read_s, flop_s = nbytes / (rates["memory_GBps"] * 1e9), flops / (rates["matmul_gflops"] * 1e9)
            out["bound_s"] = max(read_s, flop_s)
            out["bound_by"] = "memory" if read_s >= flop_s else "matmul"
            out["frac_roofline"] = out["bound_s"] / seconds
    return out


def _reference_samples(n, size, channels, ranks, budget_flops):
    """How many samples the original-order reference is timed on (its cost is linear in N:
    every product is per sample), so that one iteration stays within ``budget_flops``."""
    per_sample = cost.reference_step_flops(1, size * size, channels, *ranks)
    return int(max(1, min(n, budget_flops // max(per_sample, 1))))


def fit_iteration(n=16, size=32, channels=512, ranks=(512, 8), ref_iters=1, jax_iters=20, *,
                  repeat=3, ref_budget_flops=1e11, ref_budget_s=2.0, rates=None, auto=True):
    """Seconds per full-batch iteration (fixed step) of the three engines on one problem.

    The reference in the original order is timed on ``n_ref <= n`` samples and scaled by
    ``n / n_ref`` (exact in structure: its products are per sample); ``reference_scaled``
    says when that happened."""
    x, A, P = problem(n, size, channels, ranks)
    S = size * size
    lr = 1e-9
    Zt, At, Pt = _torch_inputs(x, A, P)
    n_ref = _reference_samples(n, size, channels, ranks, ref_budget_flops)
    t_ref = time_torch_budget(lambda: ref.decompose(Zt[:n_ref], At, Pt, lr, ref_iters), ref_budget_s) / ref_iters * n / n_ref
    t_fast = time_torch_budget(lambda: ref.decompose_fast(Zt, At, Pt, lr, jax_iters), ref_budget_s, repeat) / jax_iters

    Zcols = to_columns(flatten(jnp.asarray(x)))
    lr_arg = (jnp.float32(lr), jnp.float32(lr))
    Aj, Pj = jnp.asarray(A), jnp.asarray(P)
    xj = jnp.asarray(x)
    init = pj.Factors(Aj, Pj, size, size)

    # The public call a user makes (``pj.fit`` with a fixed step from given factors), run for K and
    # for 2K steps: the difference over K is the cost of an iteration, the rest the call's fixed cost
    # (argument checks, the one transposition of the features, the host loop).
    def public(steps):
        return pj.fit(xj, ranks, steps=steps, lr=lr, init=init, chunk=jax_iters).factors.parts

    t_k = time_jax_budget(lambda: public(jax_iters), ref_budget_s, repeat)
    t_2k = time_jax_budget(lambda: public(2 * jax_iters), ref_budget_s, repeat)
    t_jax = max(t_2k - t_k, 1e-3 * t_k) / jax_iters
    call_overhead = max(t_k - jax_iters * t_jax, 0.0)
    state = PGDState(Aj, Pj, _parts_pass(Zcols, Pj, channels), lr_arg[0], lr_arg[1])
    mem = compiled_memory(_run_chunk, Zcols, state, jax_iters, lr_arg, auto=False, chunk=jax_iters)
    flops = cost.fit_step_flops(n, S, channels, *ranks)
    ref_flops = cost.reference_step_flops(n, S, channels, *ranks)
    nbytes = cost.fit_step_feature_bytes(n, S, channels)
    out = {
        "n": n,
        "size": size,
        "S": S,
        "channels": channels,
        "ranks": list(ranks),
        "shape": [n, size, size, channels],
        "reference_original_order_s": t_ref,
        "reference_samples_timed": n_ref,
        "reference_scaled": n_ref < n,
        "torch_same_algebra_s": t_fast,
        "panda_jax_s": t_jax,
        "panda_jax_call_overhead_s": call_overhead,
        "speedup_vs_reference": t_ref / t_jax,
        "speedup_vs_torch_same_algebra": t_fast / t_jax,
        "flops_per_iteration": flops,
        "reference_flops_per_iteration": ref_flops,
        "feature_bytes": x.nbytes,
        "feature_bytes_per_iteration": nbytes,
        "reference_largest_intermediate_bytes": cost.reference_intermediate_bytes(n, S, channels),
        "panda_jax_compiled": mem,
        "panda_jax": _rates(flops, nbytes, t_jax, rates),
        "torch_same_algebra": _rates(flops, nbytes, t_fast, rates),
        "reference": _rates(ref_flops, None, t_ref, rates),
        "panda_jax_feature_GBps": nbytes / t_jax / 1e9,
    }
    if auto:
        def run_auto(steps):
            f = pj.Factors(Aj, Pj, size, size)
            return pj.fit(x, ranks, steps=steps, init=f, chunk=jax_iters).factors.parts

        out["panda_jax_auto_lr_s"] = time_jax_budget(lambda: run_auto(jax_iters), ref_budget_s, repeat) / jax_iters
    return out


# ---- to convergence ---------------------------------------------------------------------------


def _first_within(losses, target, tol):
    """First index whose loss is within ``tol`` relative of ``target`` (``None`` if never)."""
    losses = np.asarray(losses, np.float64)
    hit = np.flatnonzero(losses <= target + tol * abs(target))
    return int(hit[0]) if hit.size else None


def _monotone(losses, slack=1e-6):
    """Finite and non-increasing up to float round-off of the summed loss."""
    losses = np.asarray(losses, np.float64)
    return bool(np.all(np.isfinite(losses)) and np.all(np.diff(losses) <= slack * abs(losses[0])))


def convergence(x, ranks, iters=200, *, tol=1e-3, key=None, repeat=1):
    """Full-batch fit to convergence from one init with one fixed ``lr`` for all engines.

    ``lr`` is the largest ``AUTO_STEP / max(lam_S, lam_C) / 2**k`` (the curvature estimates
    panda-jax's automatic step caps use) whose panda-jax run decreases the loss monotonically:
    a larger fixed step oscillates, and the engines' round-off then sends the curves apart. Reports, per engine, the
    iterations and seconds until the loss is within ``tol`` relative of its final value, and
    how far the engines' loss curves are apart; plus panda-jax's default ``lr="auto"`` from the
    same init, measured to the fixed-step run's final loss."""
    x = np.asarray(x, np.float32)
    N, H, W, C = x.shape
    rc, rs = ranks
    key = jax.random.key(0) if key is None else key
    A0 = np.array(pj.hosvd_init(x, rc))
    P0 = np.array(init_parts(key, H * W, rs))
    init = pj.Factors(jnp.asarray(A0), jnp.asarray(P0), H, W)
    lam_s, lam_c = (float(v) for v in block_curvatures(to_columns(flatten(jnp.asarray(x))), jnp.asarray(A0)))
    lr = AUTO_STEP / max(lam_s, lam_c)
    for _ in range(30):
        try:
            res = pj.fit(x, ranks, steps=iters, lr=lr, init=init, chunk=iters)
            if _monotone(res.losses):
                break
        except pj.DivergenceError:
            pass
        lr /= 2
    jax_losses = res.losses
    t_jax = time_jax(lambda: pj.fit(x, ranks, steps=iters, lr=lr, init=init, chunk=iters).factors.parts,
                     repeat=repeat, warmup=0)

    Zt, At, Pt = _torch_inputs(x, A0, P0)

    def trajectory(step, timed):
        Uc, Us, losses, secs = At.clone(), Pt.clone(), [], 0.0
        for _ in range(iters):
            with torch.no_grad():
                losses.append(float(N * ref.rec_loss(Zt, Uc, Us)))
            t = time.perf_counter()
            Uc, Us = step(Zt, Uc, Us, lr, 1)
            secs += time.perf_counter() - t
        return np.asarray(losses), (secs if timed else None)

    ref_losses, t_ref = trajectory(ref.decompose, True)
    fast_losses, _ = trajectory(ref.decompose_fast, False)
    t_fast = time_torch(lambda: ref.decompose_fast(Zt, At, Pt, lr, iters), repeat=repeat, warmup=1)

    t_auto = time_jax(lambda: pj.fit(x, ranks, steps=iters, init=init, chunk=iters).factors.parts,
                      repeat=repeat, warmup=1)
    auto_losses = pj.fit(x, ranks, steps=iters, init=init, chunk=iters).losses

    scale = float(ref_losses[0])
    engines = {}
    for name, losses, secs in (
        ("reference_original_order", ref_losses, t_ref),
        ("torch_same_algebra", fast_losses, t_fast),
        ("panda_jax", jax_losses, t_jax),
    ):
        it = _first_within(losses, float(losses[-1]), tol)
        engines[name] = {
            "iterations_to_tol": it,
            "seconds_to_tol": None if it is None else secs * it / iters,
            "seconds_total": secs,
            "seconds_per_iteration": secs / iters,
            "final_loss": float(losses[-1]),
            "max_loss_diff_vs_reference": float(np.max(np.abs(losses - ref_losses)) / scale),
        }
    target = float(jax_losses[-1])
    it = _first_within(auto_losses, target, tol)
    engines["panda_jax_auto_lr"] = {
        "iterations_to_tol": it,
        "seconds_to_tol": None if it is None else t_auto * it / iters,
        "seconds_total": t_auto,
        "seconds_per_iteration": t_auto / iters,
        "final_loss": float(auto_losses[-1]),
        "note": "lr='auto' from the same init; iterations until within tol of the fixed-lr final loss "
                "(seconds include the curvature estimates)",
    }
    return {
        "shape": [N, H, W, C],
        "ranks": [rc, rs],
        "iterations": iters,
        "lr": lr,
        "tol": tol,
        "engines": engines,
        "losses": {
            "reference_original_order": ref_losses.tolist(),
            "torch_same_algebra": fast_losses.tolist(),
            "panda_jax": np.asarray(jax_losses).tolist(),
            "panda_jax_auto_lr": np.asarray(auto_losses).tolist(),
        },
    }


# ---- refinement -------------------------------------------------------------------------------


@torch.no_grad()
def refine_fast(Z: torch.Tensor, Uc: torch.Tensor, Us: torch.Tensor, lr: float, its: int):
    """Refinement of every sample of ``Z [N, C, S]`` at once with panda-jax's association
    (``B_i = A^T Z_i`` fixed; no ``S x S`` products), in PyTorch."""
    N = Z.shape[0]
    B = torch.einsum("ck,ncs->nks", Uc, Z)
    AtA = Uc.T @ Uc
    P = torch.clamp(Us, min=0).expand(N, *Us.shape).clone()
    Y = B @ P
    for _ in range(its):
        W = AtA @ Y
        PtP = P.transpose(1, 2) @ P
        YtW = Y.transpose(1, 2) @ W
        g = B.transpose(1, 2) @ (-4.0 * Y + 2.0 * W @ PtP) + 2.0 * P @ YtW
        P = torch.clamp(P - lr * g, min=0)
        Y = B @ P
    return P


def refinement(size=32, channels=512, rank_c=512, rank_s=16, steps=100, batch=1, *, ref_steps=10,
               ref_samples=None, ref_budget_s=2.0, repeat=3, rates=None, auto=True):
    """Seconds to refine ``batch`` samples for ``steps`` fixed steps: the public ``pj.refine`` on
    all samples in one call, and one call per sample, PyTorch batched with the same association, and the
    reference one sample at a time (timed on ``ref_steps`` steps and ``ref_samples`` samples,
    scaled linearly)."""
    x, A, P = problem(batch, size, channels, (rank_c, rank_s), seed=1)
    S = size * size
    # A step that moves the parts, so the engines' results can be compared.
    Aj = jnp.asarray(A)
    lam = float(jnp.max(jnp.linalg.norm(jnp.einsum("ck,nsc->nks", Aj, flatten(jnp.asarray(x))), axis=(1, 2)) ** 2))
    lr = 0.1 / lam
    Zt, At, Pt = _torch_inputs(x, A, P)
    ref_steps = min(ref_steps, steps)
    ref_samples = batch if ref_samples is None else max(1, min(ref_samples, batch))
    t_ref = time_torch_budget(lambda: [ref.refine(Zt[i: i + 1], At, Pt, lr, ref_steps) for i in range(ref_samples)],
                              ref_budget_s) * (steps / ref_steps) * (batch / ref_samples)
    t_fast = time_torch_budget(lambda: refine_fast(Zt, At, Pt, lr, steps), ref_budget_s, repeat)
    Zf = flatten(jnp.asarray(x))
    Pj, lrj = jnp.asarray(P), jnp.float32(lr)
    xj = jnp.asarray(x)
    F = pj.Factors(Aj, Pj, size, size)
    # The public call a user makes (argument checks included; its CPU default maps over samples).
    t_jax = time_jax_budget(lambda: pj.refine(xj, F, steps=steps, lr=lr), ref_budget_s, repeat)
    out = {
        "samples": batch,
        "steps": steps,
        "shape": [size, size, channels],
        "ranks": [rank_c, rank_s],
        "reference_s": t_ref,
        "reference_scaled_from": {"steps": ref_steps, "samples": ref_samples},
        "torch_same_algebra_s": t_fast,
        "panda_jax_s": t_jax,
        "speedup_vs_reference": t_ref / t_jax,
        "speedup_vs_torch_same_algebra": t_fast / t_jax,
        "panda_jax": _rates(batch * steps * cost.refine_step_flops(S, rank_c, rank_s), None, t_jax, rates),
    }
    if batch > 1:
        singles = [xj[i: i + 1] for i in range(batch)]
        out["panda_jax_singles_s"] = time_jax_budget(
            lambda: [pj.refine(z, F, steps=steps, lr=lr) for z in singles], ref_budget_s, repeat)
        out["vmap_speedup_vs_singles"] = out["panda_jax_singles_s"] / t_jax
    if auto:
        out["panda_jax_auto_lr_s"] = time_jax_budget(lambda: pj.refine(xj, F, steps=steps), ref_budget_s, repeat)
    # Agreement of the engines after a few steps (same lr, same start).
    k = min(steps, 5)
    r = ref.refine(Zt[:1], At, Pt, lr, k).cpu().numpy()
    f = refine_fast(Zt[:1], At, Pt, lr, k)[0].cpu().numpy()
    j = np.asarray(_refine(Zf[:1], Aj, Pj, lrj, steps=k, auto=False)[0])
    den = max(float(np.abs(r).max()), 1e-30)
    out["max_rel_diff_after_%d_steps" % k] = {
        "torch_same_algebra": float(np.abs(f - r).max() / den),
        "panda_jax": float(np.abs(j - r).max() / den),
    }
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--channels", type=int, default=512)
    ap.add_argument("--quick", action="store_true", help="small shapes, for a smoke run")
    a = ap.parse_args(argv)
    if a.quick:
        a.n, a.size, a.channels = 4, 8, 64
    torch_setup()
    rates = {"matmul_gflops": matmul_gflops(), "memory_GBps": memory_gbps()}
    out = {
        "machine": machine(),
        **rates,
        "fit_iteration": fit_iteration(a.n, a.size, a.channels, (min(512, a.channels), 8), rates=rates),
        "refine_one_sample_100_steps": refinement(a.size, a.channels, min(512, a.channels), 16, rates=rates),
    }
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
