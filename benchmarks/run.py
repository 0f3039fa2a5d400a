"""panda-jax against the PyTorch reference: timings, rates, scaling and memory, with a report.

    python -m benchmarks.run [--quick] [--out DIR] [--only SECTION ...] [--write-results]
    python -m benchmarks.run --from-json DIR/results.json [--out DIR] [--write-results]

Everything is timed in one process after warm-up (``block_until_ready`` on the JAX side,
synchronisation on the torch side) against two PyTorch engines: ``reference`` (the original
algorithm in the original operation order, ``benchmarks/torch_reference.py``) and
``torch_same_algebra`` (the same cheap association of products panda-jax uses: the fair
engine comparison). Sections:

  sweep        one full-batch iteration over spatial sizes and sample counts, with log-log slopes
  convergence  full-batch fit to convergence (same init, same lr), plus panda-jax's lr="auto"
  stochastic   pj.fit_stream with the generator in the loop (DCGAN faces, StyleGAN2 test checkpoint)
  refinement   one sample, and 64 samples vmapped against 64 single refinements
  edits        edited images rendered per second (pj.edit + G.render)
  scale        the sharded fit on 1, 2 and 4 emulated CPU devices (subprocesses)
  memory       peak memory of streamed fits against materialised ones (subprocesses)

Writes OUT/results.json, OUT/*.png and OUT/RESULTS.md (default OUT: out/bench);
``--write-results`` also refreshes benchmarks/RESULTS.md (with its plots in
benchmarks/results/). ``--quick`` runs small shapes with few repeats (a smoke run: its
numbers say little about speed). Exits 1 if a section failed (the others still run).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("sweep", "convergence", "stochastic", "refinement", "edits", "scale", "memory", "end_to_end")

# What each mode measures. Shapes are [N, H, W, C]; ranks (R_C, R_S).
PLANS = {
    "quick": {
        "rates": {"matmul_n": 512, "memory_mb": 64},
        "sweep": {"sizes": [8, 16, 32, 64], "n": 4, "channels": 16, "ranks": [16, 8],
                  "n_list": [2, 8], "n_size": 16, "n_channels": 32, "n_ranks": [32, 8],
                  "iters": 5, "repeat": 2, "ref_budget_flops": 2e9, "ref_budget_s": 0.2},
        "convergence": {"model": "dcgan", "layer": 2, "n": 4, "ranks": [32, 4], "iters": 20, "tol": 1e-3},
        "stochastic": {"runs": [["dcgan", 2, [32, 8], 8], ["stylegan2", 2, [32, 8], 4]],
                       "steps": 5, "hosvd_batches": 2, "repeat": 2, "detail": False},
        "refinement": {"size": 16, "channels": 32, "ranks": [32, 8], "steps": 10, "batches": [1, 64],
                       "ref_steps": 2, "ref_samples": 2, "ref_budget_s": 0.2, "repeat": 2, "auto": False},
        "edits": {"runs": [["dcgan", 2, 8], ["stylegan2", 2, 4]], "repeat": 2, "detail": False},
        "scale": {"devices": [1, 2, 4], "n": 6, "size": 8, "channels": 16, "ranks": [16, 4], "steps": 10,
                  "repeat": 2},
        "memory": {"size": 8, "channels": 32, "ranks": [8, 4], "batch": 8, "steps": 2, "hosvd_batches": 1,
                   "stream": [1, 10, 100], "full": [1, 10], "lr": "1e-6"},
        # Subprocesses after the in-process measurements: beside them, they share the cores and
        # torch's threads stall on each other (small reference calls measured up to 100x slower).
        "concurrent_workers": False,
    },
    "full": {
        "rates": {"matmul_n": 2048, "memory_mb": 512},
        "sweep": {"sizes": [8, 16, 32, 64], "n": 16, "channels": 512, "ranks": [512, 8],
                  "n_list": [4, 8, 16, 32, 64], "n_size": 32, "n_channels": 512, "n_ranks": [512, 8],
                  "iters": 20, "repeat": 5, "ref_budget_flops": 5e10, "ref_budget_s": 5.0},
        "convergence": {"model": "dcgan", "layer": 3, "n": 32, "ranks": [64, 8], "iters": 200, "tol": 1e-3},
        "stochastic": {"runs": [["dcgan", 3, [128, 8], 16], ["dcgan", 4, [64, 8], 16],
                                ["stylegan2", 4, [32, 8], 16], ["stylegan2", 8, [8, 8], 16]],
                       "steps": 50, "hosvd_batches": 10, "repeat": 3, "detail": True},
        "refinement": {"size": 32, "channels": 512, "ranks": [512, 16], "steps": 100, "batches": [1, 64],
                       "ref_steps": 2, "ref_samples": 2, "ref_budget_s": 5.0, "repeat": 5, "auto": True},
        "edits": {"runs": [["dcgan", 3, 16], ["dcgan", 4, 16], ["stylegan2", 4, 16], ["stylegan2", 8, 16]],
                  "repeat": 5, "detail": True},
        "scale": {"devices": [1, 2, 4], "n": 30, "size": 32, "channels": 128, "ranks": [64, 8], "steps": 50,
                  "repeat": 3},
        "memory": {"size": 16, "channels": 128, "ranks": [32, 4], "batch": 16, "steps": 4, "hosvd_batches": 2,
                   "stream": [1, 10, 100], "full": [1, 10], "lr": "auto"},
        "concurrent_workers": False,
    },
}

SCALE_NOTE = (
    "The K devices are emulated on the same CPU cores (XLA_FLAGS=--xla_force_host_platform_device_count=K, "
    "one subprocess each): they share the cores, so no speed-up is expected and the sharded program adds "
    "collectives. What the numbers show is that the same pj.fit call runs on a K-device mesh (samples sharded "
    "over a 'data' axis, factors replicated, the summed gradients all-reduced), pads N to a multiple of K with "
    "zero samples (exact: a zero sample adds nothing to the loss or to either gradient), and gives the factors "
    "of the 1-device run up to float summation order. On several GPUs, a TPU slice or several hosts the same "
    "call divides the per-iteration work by the device count."
)

MEMORY_NOTE = (
    "Peak resident memory of a subprocess (Linux: VmHWM, reset before each row through /proc/self/clear_refs, "
    "after a warm-up run of the row's shapes, so each peak is that of one fit; where it cannot be reset, one "
    "process per row), and its increase over the resident size just before the fit. "
    "'stream' runs pj.fit_stream: every batch is drawn inside the jitted loop, and the HOSVD init sums the "
    "scatter matrix over streamed batches, so no more than a batch of features exists at once; its total "
    "sample count grows with the multiple (steps and HOSVD batches both scale) while the peak stays flat. "
    "'full' materialises all samples and runs pj.fit: its peak grows with the data. 'compiled' rows are "
    "XLA's own accounting (memory_analysis) of the temporaries each jitted program allocates, for the "
    "materialised shape."
)


# ---- small utilities --------------------------------------------------------------------------


def _log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write(path, text):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=d)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _jsonable(obj):
    import numpy as np

    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


# ---- subprocess workers -----------------------------------------------------------------------


def _worker(args, env_extra=None, timeout=900):
    env = dict(os.environ)
    env.update(env_extra or {})
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "benchmarks.worker", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr or p.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"worker {' '.join(args[:3])} failed (exit {p.returncode}): " + " | ".join(tail))
    out = json.loads(lines[-1][len("RESULT "):])
    out["process_wall_s"] = wall
    return out


def _scale_lr(plan):
    """One fixed step for every device count: a twentieth of ``1 / max(lam_S, lam_C)`` of the
    data, computed here in numpy so the workers share it exactly."""
    import numpy as np

    from .factorize import problem

    x, A, _ = problem(plan["n"], plan["size"], plan["channels"], plan["ranks"])
    Z = x.reshape(x.shape[0], -1, x.shape[-1]).astype(np.float64)  # [N, S, C]
    lam_c = np.linalg.eigvalsh(np.einsum("nsc,nsd->cd", Z, Z))[-1]
    B = np.einsum("nsc,ck->nks", Z, A)
    lam_s = np.linalg.eigvalsh(np.einsum("nks,nkt->st", B, B))[-1]
    return float(0.05 / max(lam_c, lam_s))


def scale_section(plan, tmpdir):
    import numpy as np

    lr = _scale_lr(plan)
    rows = []
    common = ["--n", str(plan["n"]), "--size", str(plan["size"]), "--channels", str(plan["channels"]),
              "--ranks", *map(str, plan["ranks"]), "--steps", str(plan["steps"]), "--lr", repr(lr),
              "--repeat", str(plan["repeat"])]
    flags = os.environ.get("XLA_FLAGS", "")
    runs = [(k, {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={k}".strip()},
             "emulated CPU devices") for k in plan["devices"]]
    import jax

    if jax.default_backend() != "cpu":
        runs.append((len(jax.devices()), {}, f"all {jax.default_backend()} devices"))
    for k, env, what in runs:
        save = os.path.join(tmpdir, f"scale_{len(rows)}.npz")
        r = _worker(["scale", *common, "--save", save], env)
        r["what"] = what
        r["_save"] = save
        rows.append(r)
    base = np.load(rows[0]["_save"])
    for r in rows:
        f = np.load(r["_save"])
        r["max_rel_diff_parts"] = float(np.abs(f["parts"] - base["parts"]).max() / np.abs(base["parts"]).max())
        r["max_rel_diff_appearance"] = float(
            np.abs(f["appearance"] - base["appearance"]).max() / np.abs(base["appearance"]).max())
        r["rel_diff_final_loss"] = abs(r["final_loss"] - rows[0]["final_loss"]) / abs(rows[0]["final_loss"])
        r["speedup_vs_1"] = rows[0]["seconds_per_iteration"] / r["seconds_per_iteration"]
    return {"rows": rows, "lr": lr, "shape": [plan["n"], plan["size"], plan["size"], plan["channels"]],
            "ranks": plan["ranks"], "note": SCALE_NOTE}


def memory_section(plan):
    common = ["--size", str(plan["size"]), "--channels", str(plan["channels"]), "--ranks", *map(str, plan["ranks"]),
              "--batch", str(plan["batch"]), "--steps", str(plan["steps"]), "--hosvd-batches", str(plan["hosvd_batches"]),
              "--lr", str(plan["lr"])]
    r = _worker(["memory", "--stream", *map(str, plan["stream"]), "--full", *map(str, plan["full"]), *common])
    rows, method = r["rows"], r["peak_method"]
    if len(rows) < len(plan["stream"]) + len(plan["full"]):
        # The peak mark cannot be reset here: one process per row.
        rows = []
        for mode in ("stream", "full"):
            for m in plan[mode]:
                other = "full" if mode == "stream" else "stream"
                rows += _worker(["memory", f"--{mode}", str(m), f"--{other}", *common])["rows"]
        method = "one process per row"
    return {"rows": rows, "peak_method": method, "sample_bytes": plan["size"] ** 2 * plan["channels"] * 4,
            "note": MEMORY_NOTE}


def compiled_memory_rows(plan):
    """XLA's accounting of the jitted programs of a fit on the largest materialised sample count."""
    import jax
    import jax.numpy as jnp

    from panda_jax.factorize import PGDState, _run_chunk, _scatter, block_curvatures

    from .factorize import compiled_memory

    n = (plan["steps"] + plan["hosvd_batches"]) * plan["batch"] * max(plan["full"])
    S, C = plan["size"] ** 2, plan["channels"]
    rc, rs = plan["ranks"]
    f32 = jnp.float32
    sds = jax.ShapeDtypeStruct
    Zf, A, P, e = sds((n, S, C), f32), sds((C, rc), f32), sds((S, rs), f32), sds((), f32)
    Zt, X = sds((S, n * C), f32), sds((C, n * rs), f32)  # the fit loop's layout (to_columns)
    feature_bytes = n * S * C * 4
    rows = []
    for name, fn, args, kw in (
        ("fit loop, fixed lr (_run_chunk)", _run_chunk, (Zt, PGDState(A, P, X, e, e), 4, (e, e)), {"auto": False, "chunk": 4}),
        ("fit loop, lr='auto' (_run_chunk)", _run_chunk, (Zt, PGDState(A, P, X, e, e), 4, (e, e)), {"auto": True, "chunk": 4}),
        ("step-size curvature estimate (block_curvatures)", block_curvatures, (Zt, A), {}),
        ("HOSVD scatter matrix (_scatter)", _scatter, (Zf,), {}),
    ):
        m = compiled_memory(fn, *args, **kw)
        if m is not None:
            rows.append({"program": name, "samples": n, "feature_bytes": feature_bytes, **m,
                         "temp_over_features": m["temp_bytes"] / feature_bytes})
    return rows


# ---- in-process sections ----------------------------------------------------------------------


def sweep_section(plan, rates):
    from . import cost
    from .factorize import fit_iteration

    kw = dict(jax_iters=plan["iters"], repeat=plan["repeat"], ref_budget_flops=plan["ref_budget_flops"],
              ref_budget_s=plan["ref_budget_s"], rates=rates, auto=False)
    spatial = []
    for s in plan["sizes"]:
        _log(f"sweep: {plan['n']}x{s}x{s}x{plan['channels']}")
        spatial.append(fit_iteration(plan["n"], s, plan["channels"], tuple(plan["ranks"]), **kw))
    samples = []
    for n in plan["n_list"]:
        _log(f"sweep: {n}x{plan['n_size']}x{plan['n_size']}x{plan['n_channels']}")
        samples.append(fit_iteration(n, plan["n_size"], plan["n_channels"], tuple(plan["n_ranks"]), **kw))
    slopes = {}
    for eng, key in (("panda_jax", "panda_jax_s"), ("torch_same_algebra", "torch_same_algebra_s"),
                     ("reference_original_order", "reference_original_order_s")):
        slopes[eng] = {
            "vs_S": cost.loglog_slope([r["S"] for r in spatial], [r[key] for r in spatial]),
            "vs_N": cost.loglog_slope([r["n"] for r in samples], [r[key] for r in samples]),
        }
    slopes["flops_panda_jax"] = {
        "vs_S": cost.loglog_slope([r["S"] for r in spatial], [r["flops_per_iteration"] for r in spatial]),
        "vs_N": cost.loglog_slope([r["n"] for r in samples], [r["flops_per_iteration"] for r in samples]),
    }
    slopes["flops_reference"] = {
        "vs_S": cost.loglog_slope([r["S"] for r in spatial], [r["reference_flops_per_iteration"] for r in spatial]),
        "vs_N": cost.loglog_slope([r["n"] for r in samples], [r["reference_flops_per_iteration"] for r in samples]),
    }
    return {"spatial": spatial, "samples": samples, "slopes": slopes}


def _features(G, layer, n, seed=0):
    import jax
    import numpy as np

    Z, _ = G.features(G.sample_latents(jax.random.key(seed), n), layer)
    return np.asarray(Z)


def convergence_section(plan, gens):
    from .factorize import convergence, problem

    try:
        G = gens.get(plan["model"])
        x = _features(G, plan["layer"], plan["n"])
        source = f"{plan['model']} layer {plan['layer']} features"
    except Exception as e:  # no generator: planted-free random data still shows the engines agree
        x, _, _ = problem(plan["n"], 8, 64, plan["ranks"])
        source = f"random non-negative features ({type(e).__name__}: {e})"
    r = convergence(x, tuple(plan["ranks"]), plan["iters"], tol=plan["tol"])
    r["data"] = source
    return r


def refinement_section(plan, rates):
    from .factorize import refinement

    rows = []
    for b in plan["batches"]:
        _log(f"refinement: {b} sample(s)")
        rows.append(refinement(plan["size"], plan["channels"], plan["ranks"][0], plan["ranks"][1], plan["steps"], b,
                               ref_steps=plan["ref_steps"], ref_samples=plan["ref_samples"],
                               ref_budget_s=plan["ref_budget_s"], repeat=plan["repeat"], rates=rates,
                               auto=plan["auto"]))
    return {"rows": rows}


class Generators:
    """Benchmark generators, converted once per run; a missing checkpoint is remembered."""

    def __init__(self):
        self._cache, self.info = {}, {}

    def get(self, name):
        from .generators import load

        if name not in self._cache:
            try:
                self._cache[name], self.info[name] = load(name)
            except Exception as e:
                self._cache[name] = e
        g = self._cache[name]
        if isinstance(g, Exception):
            raise g
        return g


def stochastic_section(plan, gens, rates, ref_budget_flops, factors_out):
    from .generators import Unavailable, stochastic

    rows, skipped = [], []
    for name, layer, ranks, batch in plan["runs"]:
        try:
            G = gens.get(name)
        except Unavailable as e:
            skipped.append({"model": name, "reason": str(e)})
            continue
        _log(f"stochastic: {name} layer {layer}")
        r = stochastic(name, G, layer, tuple(ranks), batch, plan["steps"], hosvd_batches=plan["hosvd_batches"],
                       repeat=plan["repeat"], rates=rates, ref_budget_flops=ref_budget_flops, detail=plan["detail"])
        factors_out[(name, layer)] = r.pop("_factors")
        rows.append(r)
    return {"rows": rows, "skipped": skipped}


def edits_section(plan, gens, factors_in):
    import jax.numpy as jnp

    import panda_jax as pj

    from .generators import Unavailable, edits

    rows, skipped = [], []
    for name, layer, batch in plan["runs"]:
        try:
            G = gens.get(name)
        except Unavailable as e:
            skipped.append({"model": name, "reason": str(e)})
            continue
        f = factors_in.get((name, layer))
        if f is None:
            H, W, C = G.layers[layer]
            f = pj.fit(jnp.asarray(_features(G, layer, 8)), (min(C, 16), 4), steps=10).factors
        _log(f"edits: {name} layer {layer}")
        rows.append(edits(name, G, layer, f, batch, repeat=plan["repeat"], detail=plan["detail"]))
    return {"rows": rows, "skipped": skipped}


# ---- driver -----------------------------------------------------------------------------------


def _section(results, name, fn, failures):
    t = time.perf_counter()
    try:
        results[name] = fn()
    except Exception as e:
        traceback.print_exc()
        results[name] = {"error": f"{type(e).__name__}: {e}"}
        failures.append(name)
    if isinstance(results[name], dict):
        results[name]["section_wall_s"] = time.perf_counter() - t
    _log(f"{name}: {time.perf_counter() - t:.1f} s")


def measure(mode: str, only=None) -> tuple[dict, list]:
    plan = PLANS[mode]
    only = set(only or SECTIONS)
    t0 = time.perf_counter()
    failures: list[str] = []
    results: dict = {}

    # Workers first (concurrently in quick mode): they are separate processes.
    worker_results: dict = {}
    tmpdir = tempfile.mkdtemp(prefix="panda-bench-")

    def run_workers():
        for name, fn in (("scale", lambda: scale_section(plan["scale"], tmpdir)),
                         ("memory", lambda: memory_section(plan["memory"]))):
            if name in only:
                _section(worker_results, name, fn, failures)

    thread = None
    if plan["concurrent_workers"]:
        thread = threading.Thread(target=run_workers, daemon=True)
        thread.start()

    import jax

    from .common import machine, matmul_gflops, memory_gbps
    from .factorize import torch_setup

    torch_settings = torch_setup()
    _log("machine rates")
    rates = {
        "matmul_gflops": matmul_gflops(plan["rates"]["matmul_n"]),
        "memory_GBps": memory_gbps(plan["rates"]["memory_mb"]),
        "matmul_n": plan["rates"]["matmul_n"],
        "memory_mb": plan["rates"]["memory_mb"],
        "torch_matmul_gflops": _torch_matmul_gflops(plan["rates"]["matmul_n"]),
    }
    results["meta"] = {
        "mode": mode,
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        **torch_settings,
        "jax_matmul_precision": str(jax.config.jax_default_matmul_precision or "default"),
        "concurrent_workers": plan["concurrent_workers"],
        "plan": plan,
        "command": " ".join(["python -m benchmarks.run"] + sys.argv[1:]),
    }
    results["rates"] = rates
    gens = Generators()
    factors: dict = {}
    if "sweep" in only:
        _section(results, "sweep", lambda: sweep_section(plan["sweep"], rates), failures)
    if "convergence" in only:
        _section(results, "convergence", lambda: convergence_section(plan["convergence"], gens), failures)
    if "stochastic" in only:
        _section(results, "stochastic", lambda: stochastic_section(
            plan["stochastic"], gens, rates, plan["sweep"]["ref_budget_flops"], factors), failures)
    if "refinement" in only:
        _section(results, "refinement", lambda: refinement_section(plan["refinement"], rates), failures)
    if "edits" in only:
        _section(results, "edits", lambda: edits_section(plan["edits"], gens, factors), failures)
    if "memory" in only:
        compiled = []
        try:
            compiled = compiled_memory_rows(plan["memory"])
        except Exception as e:  # reported, not fatal: the subprocess rows still stand
            compiled = [{"program": "error", "error": f"{type(e).__name__}: {e}"}]
    results["meta"]["generators"] = gens.info
    if thread is not None:
        _log("waiting for the subprocess measurements")
        thread.join()
    else:
        run_workers()
    results.update(worker_results)
    if "end_to_end" in only:  # fresh processes, after everything else so that nothing runs beside them
        from . import end_to_end

        _section(results, "end_to_end", lambda: end_to_end.section(end_to_end.PLANS[mode]), failures)
    if "memory" in only and isinstance(results.get("memory"), dict) and "error" not in results["memory"]:
        results["memory"]["compiled"] = compiled
    results["meta"]["wall_s"] = time.perf_counter() - t0
    results["meta"]["failed_sections"] = sorted(set(failures))
    import shutil

    shutil.rmtree(tmpdir, ignore_errors=True)
    return _jsonable(results), failures


def _torch_matmul_gflops(n: int, repeat: int = 5) -> float:
    import torch

    from .common import time_torch

    from .factorize import torch_device

    a = torch.ones((n, n), dtype=torch.float32, device=torch_device())
    return 2 * n**3 / time_torch(lambda: a @ a, repeat=repeat) / 1e9


def write_outputs(results: dict, out: str, write_results: bool = False) -> dict:
    """``results.json``, the plots and ``RESULTS.md`` in ``out``; with ``write_results`` also
    ``benchmarks/RESULTS.md`` and its plots in ``benchmarks/results/``."""
    from . import report

    os.makedirs(out, exist_ok=True)
    _atomic_write(os.path.join(out, "results.json"), json.dumps(results, indent=1, sort_keys=False) + "\n")
    plots = report.plots(results, out)
    _atomic_write(os.path.join(out, "RESULTS.md"), report.markdown(results, {k: os.path.basename(v) for k, v in plots.items()}))
    written = {"json": os.path.join(out, "results.json"), "markdown": os.path.join(out, "RESULTS.md"), "plots": plots}
    if write_results:
        bench = os.path.join(ROOT, "benchmarks")
        pdir = os.path.join(bench, "results")
        plots2 = report.plots(results, pdir)
        _atomic_write(os.path.join(pdir, "results.json"), json.dumps(results, indent=1) + "\n")
        # Sections other scripts write (generators, editor latency, locality) are kept.
        from .common import own_sections

        md_path = os.path.join(bench, "RESULTS.md")
        kept = []
        if os.path.exists(md_path):
            with open(md_path) as f:
                kept = own_sections(f.read())
        md = report.markdown(results, {k: "results/" + os.path.basename(v) for k, v in plots2.items()})
        _atomic_write(md_path, "\n\n".join([md.rstrip()] + [k.rstrip() for k in kept]) + "\n")
        written["results_md"] = os.path.join(bench, "RESULTS.md")
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small shapes, few repeats (a smoke run, under 2 minutes)")
    ap.add_argument("--out", default=os.path.join("out", "bench"), help="output folder (default: out/bench)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION",
                    help=f"run only these sections: {', '.join(SECTIONS)}")
    ap.add_argument("--write-results", action="store_true",
                    help="also refresh benchmarks/RESULTS.md and benchmarks/results/")
    ap.add_argument("--from-json", metavar="FILE", help="rebuild the report from a results.json; measure nothing")
    ap.add_argument("--torch-threads", type=int, help="torch.set_num_threads before measuring (default: torch's)")
    a = ap.parse_args(argv)

    if a.from_json:
        with open(a.from_json) as f:
            results = json.load(f)
        failures = results.get("meta", {}).get("failed_sections", [])
    else:
        if a.torch_threads:
            import torch

            torch.set_num_threads(a.torch_threads)
        results, failures = measure("quick" if a.quick else "full", a.only)
    written = write_outputs(results, a.out, a.write_results)
    from . import report

    print(report.summary(results))
    print(f"wrote {written['json']}, {written['markdown']} and {len(written['plots'])} plots"
          + (f"; refreshed {written['results_md']}" if "results_md" in written else ""))
    if failures:
        print(f"failed sections: {', '.join(sorted(set(failures)))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
