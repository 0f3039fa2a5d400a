"""The benchmark report: markdown tables, plots (matplotlib, Agg) and a short text summary,
all generated from the ``results.json`` that :mod:`benchmarks.run` writes."""

from __future__ import annotations

import math
import os
import tempfile

# ---- formatting -------------------------------------------------------------------------------


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def t(s) -> str:
    """Seconds, with a unit that keeps three significant digits."""
    if not _num(s):
        return "–"
    for unit, f in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(s) >= f or unit == "µs":
            return f"{s / f:.3g} {unit}"
    return f"{s:.3g} s"


def x(r) -> str:
    return f"{r:.3g}x" if _num(r) else "–"


def b(n) -> str:
    if not _num(n):
        return "–"
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= f:
            return f"{n / f:.3g} {unit}"
    return f"{int(n)} B"


def g(v, digits=3) -> str:
    return f"{v:.{digits}g}" if _num(v) else "–"


def pct(v) -> str:
    return f"{100 * v:.3g}%" if _num(v) else "–"


def _table(header, rows) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _shape(s) -> str:
    return "×".join(str(v) for v in s) if s else "–"


def _failed(sec) -> str | None:
    if sec is None:
        return "not run"
    if isinstance(sec, dict) and "error" in sec:
        return f"**failed**: `{sec['error']}`"
    return None


# ---- markdown ---------------------------------------------------------------------------------


def _machine(res) -> str:
    meta, rates = res.get("meta", {}), res.get("rates", {})
    m = meta.get("machine", {})
    rows = [
        ["CPU", m.get("cpu", m.get("processor", "?"))],
        ["cores (os.cpu_count)", m.get("cpu_count", "?")],
        ["platform", m.get("platform", "?")],
        ["JAX", f"{m.get('jax', '?')}, backend {m.get('jax_backend', '?')}, devices {', '.join(m.get('jax_devices', []))}"],
        ["PyTorch", f"{m.get('torch', '?')} on {meta.get('torch_device', 'cpu')}, "
                    f"{meta.get('torch_threads', m.get('torch_threads', '?'))} threads, "
                    f"denormals flushed: {meta.get('torch_flush_denormal', '?')}"
                    + (f", TF32 matmuls: {meta['torch_allow_tf32']}" if "torch_allow_tf32" in meta else "")],
        ["JAX float32 matmul precision", str(meta.get("jax_matmul_precision", "?"))],
    ]
    if m.get("gpu"):
        rows.append(["GPU", m["gpu"]])
    rows += [
        ["measured matmul rate (JAX)", f"{g(rates.get('matmul_gflops'))} GFLOP/s (float32, n = {rates.get('matmul_n', '?')})"],
        ["measured matmul rate (torch)", f"{g(rates.get('torch_matmul_gflops'))} GFLOP/s"],
        ["measured memory read bandwidth", f"{g(rates.get('memory_GBps'))} GB/s (jitted sum over {rates.get('memory_mb', '?')} MiB)"],
    ]
    return _table(["", ""], rows)


HOW_TO_READ = """\
Engines: **reference** is the original algorithm in PyTorch in the original operation order
(`benchmarks/torch_reference.py`: `decompose`, `refine`, products evaluated left to right, so
each sample forms `S x S` and `C x C` matrices); **torch (same algebra)** is PyTorch with the
association of products panda-jax uses (`decompose_fast`, and a batched refinement): the fair
engine comparison; **panda-jax** is this package (jitted loops). All run in one process, after
warm-up, timed with `block_until_ready` (JAX) or after synchronising (torch); times are medians.
Fit and refinement timings use the original's fixed step (`lr` a float) so that every engine
does the same work; panda-jax's default `lr="auto"` adds backtracking trials.

GFLOP/s count the products of panda-jax's association (`benchmarks/cost.py`,
`fit_step_flops`: `4 N S C R_S` for the two passes over the features plus the terms on
`[N, C, R_S]` and `[C, R_C]` arrays) for panda-jax and torch (same algebra), and the original
order's own count for the reference. A step reads the features twice (`Z^T V`, then `Z P`):
with `R_S` parts that is `R_S / 2` flops per byte, so on large inputs the memory bandwidth, not
the matmul rate, is the limit; feature GB/s are compared with the measured read bandwidth
(small inputs that stay in the caches can exceed it). "Of roofline" is the larger of the two bounds
(features read at the measured bandwidth, products done at the measured matmul rate) over the
measured time: with `R_C = 512` and few samples the `[C, R_C]` products, not the reads, bound a
step. Reference times marked * were measured
on fewer samples and scaled linearly in N (each of its products is per sample).
"""


def _sweep(res, plots) -> str:
    sec = res.get("sweep")
    f = _failed(sec)
    if f:
        return f
    out = []
    for key, title, var in (("spatial", "Spatial size", "size"), ("samples", "Sample count", "n")):
        rows = sec.get(key, [])
        if not rows:
            continue
        r0 = rows[0]
        fixed = (f"N = {r0['n']}, " if var == "size" else f"{r0['size']}×{r0['size']}, ") + \
            f"C = {r0['channels']}, ranks (R_C, R_S) = ({r0['ranks'][0]}, {r0['ranks'][1]})"
        out.append(f"**{title}** ({fixed}); seconds per iteration:\n")
        table = []
        for r in rows:
            pj_, tf = r.get("panda_jax", {}), r.get("torch_same_algebra", {})
            comp = r.get("panda_jax_compiled") or {}
            table.append([
                f"{r['size']}×{r['size']}" if var == "size" else r["n"],
                t(r["reference_original_order_s"]) + ("*" if r.get("reference_scaled") else ""),
                t(r["torch_same_algebra_s"]),
                t(r["panda_jax_s"]),
                x(r["speedup_vs_reference"]),
                x(r["speedup_vs_torch_same_algebra"]),
                f"{g(pj_.get('gflops'))} ({pct(pj_.get('frac_matmul'))})",
                f"{g(tf.get('gflops'))}",
                f"{g(pj_.get('feature_GBps'))} ({pct(pj_.get('frac_bandwidth'))})",
                f"{pct(pj_.get('frac_roofline'))} ({pj_.get('bound_by', '-')})",
                b(r["feature_bytes"]),
                b(comp.get("temp_bytes")),
                b(r.get("reference_largest_intermediate_bytes")),
            ])
        out.append(_table(
            ["H×W" if var == "size" else "N", "reference", "torch (same algebra)", "panda-jax", "vs reference",
             "vs torch", "panda-jax GFLOP/s (of matmul)", "torch GFLOP/s", "panda-jax feature GB/s (of bandwidth)",
             "panda-jax of roofline (bound)", "features", "panda-jax temporaries†", "reference largest temporary‡"], table))
        out.append("")
    out.append("† XLA's `memory_analysis` of the compiled fit loop (buffers it allocates besides its inputs "
               "and outputs). ‡ `N x max(S, C)^2` float32: one per-sample `S x S` (or `C x C`) product "
               "over the batch, counted, not measured.\n")
    sl = sec.get("slopes", {})
    if sl:
        out.append("**Growth** (least-squares slope of log time against log S, and against log N):\n")
        rows = []
        for eng, label in (("panda_jax", "panda-jax time"), ("torch_same_algebra", "torch (same algebra) time"),
                           ("reference_original_order", "reference time"), ("flops_panda_jax", "panda-jax flop count"),
                           ("flops_reference", "reference flop count")):
            if eng in sl:
                rows.append([label, g(sl[eng].get("vs_S"), 2), g(sl[eng].get("vs_N"), 2)])
        out.append(_table(["", "slope vs S = H·W", "slope vs N"], rows))
        out.append(
            "\npanda-jax's work is linear in both S and N (flop-count slopes near 1; the fixed `[C, R_C]` terms "
            "pull the S slope below 1 at small S); the original order forms per-sample `S x S` products, so "
            "its work grows like S² once S exceeds C. Time slopes below the flop slopes mean fixed per-call "
            "costs still dominate at the small end.\n")
    if plots.get("sweep"):
        out.append(f"![time per iteration]({plots['sweep']})\n")
    return "\n".join(out)


def _convergence(res, plots) -> str:
    sec = res.get("convergence")
    f = _failed(sec)
    if f:
        return f
    e = sec["engines"]
    out = [f"Data: {sec.get('data', '?')}, shape {_shape(sec['shape'])}, ranks {tuple(sec['ranks'])}; "
           f"{sec['iterations']} iterations from one HOSVD init with one fixed lr = {g(sec['lr'])} for every engine "
           f"(the largest power-of-two fraction of `0.5 / max(lam_S, lam_C)` that decreases the loss monotonically). "
           f"'to tol': until the loss is within {g(sec['tol'])} relative of the engine's final loss.\n"]
    rows = []
    for k, label in (("reference_original_order", "reference"), ("torch_same_algebra", "torch (same algebra)"),
                     ("panda_jax", "panda-jax"), ("panda_jax_auto_lr", "panda-jax, lr='auto'")):
        r = e.get(k)
        if not r:
            continue
        rows.append([label, r.get("iterations_to_tol", "–") if r.get("iterations_to_tol") is not None else "not reached",
                     t(r.get("seconds_to_tol")), t(r.get("seconds_per_iteration")), t(r.get("seconds_total")),
                     g(r.get("final_loss"), 6), g(r.get("max_loss_diff_vs_reference"), 2)])
    out.append(_table(["engine", "iterations to tol", "seconds to tol", "seconds / iteration", f"{sec['iterations']} iterations",
                       "final loss", "max loss-curve difference vs reference (relative to the initial loss)"], rows))
    out.append("\nThe `lr='auto'` row counts iterations until its loss is within tol of the fixed-lr run's final loss; its "
               "seconds include the step-size estimates.\n")
    if plots.get("convergence"):
        out.append(f"![convergence]({plots['convergence']})\n")
    return "\n".join(out)


def _stochastic(res) -> str:
    sec = res.get("stochastic")
    f = _failed(sec)
    if f:
        return f
    out = ["Each step draws a fresh batch from the generator inside the jitted loop (`pj.fit_stream` with the "
           "generator's parameters passed as `sample_args`). The torch engines have no generator here: their "
           "'fit only' time is one iteration on a batch of the same shape (add the generator time for a total).\n"]
    rows = []
    for r in sec.get("rows", []):
        fo = r["fit_only"]
        rows.append([
            r["model"], r["layer"], _shape(r["shape"]), tuple(r["ranks"]), t(r["generator_s"]),
            t(r["stream_step_auto_s"]), t(r.get("stream_step_s")), pct(r["generator_share"]), g(r["samples_per_s"]),
            f"{t(fo['reference_original_order_s'])}{'*' if fo.get('reference_scaled') else ''} / "
            f"{t(fo['torch_same_algebra_s'])} / {t(fo['panda_jax_s'])}",
            t(r["first_call_s"]), t(r.get("end_to_end_s")), t(r.get("hosvd_init_s")),
        ])
    out.append(_table(["model", "layer", "batch×H×W×C", "ranks", "generator / batch", "stream step (lr auto)",
                       "stream step (fixed lr)", "generator / stream step", "samples / s",
                       "fit only: reference / torch / panda-jax", "first call (compiles)", "end to end", "HOSVD init"],
                      rows))
    out.append(f"\n'first call' and 'end to end' are the public `pj.fit_stream` call ({_steps(sec)} steps, HOSVD init "
               "from streamed batches, automatic step sizes), the first time and again.\n")
    for s in sec.get("skipped", []):
        out.append(f"- {s['model']}: skipped ({s['reason']})")
    return "\n".join(out)


def _steps(sec):
    rows = sec.get("rows", [])
    return rows[0]["steps"] if rows else "?"


def _refinement(res) -> str:
    sec = res.get("refinement")
    f = _failed(sec)
    if f:
        return f
    rows = []
    for r in sec.get("rows", []):
        d = next((v for k, v in r.items() if k.startswith("max_rel_diff")), {})
        sc = r.get("reference_scaled_from", {})
        scaled = sc.get("steps", r["steps"]) < r["steps"] or sc.get("samples", r["samples"]) < r["samples"]
        rows.append([
            r["samples"], r["steps"], _shape(r["shape"]), tuple(r["ranks"]),
            t(r["reference_s"]) + ("*" if scaled else ""), t(r["torch_same_algebra_s"]), t(r["panda_jax_s"]),
            t(r.get("panda_jax_singles_s")), x(r["speedup_vs_reference"]), x(r["speedup_vs_torch_same_algebra"]),
            x(r.get("vmap_speedup_vs_singles")), g(r.get("panda_jax", {}).get("gflops")), t(r.get("panda_jax_auto_lr_s")),
            f"{g(d.get('torch_same_algebra'), 2)} / {g(d.get('panda_jax'), 2)}",
        ])
    return "\n".join([
        "Fixed-step refinement of every sample's parts with the appearances fixed (paper Eq. 6). panda-jax refines "
        "all samples in one vmapped call; 'one call per sample' is the same function called per sample; the reference "
        "loops over samples. * measured on fewer steps/samples and scaled linearly.\n",
        _table(["samples", "steps", "H×W×C", "ranks", "reference", "torch (same algebra, batched)", "panda-jax (vmapped)",
                "panda-jax, one call per sample", "vs reference", "vs torch", "vmapped vs per-sample calls",
                "panda-jax GFLOP/s", "panda-jax lr='auto'", "max rel. difference after 5 steps: torch / panda-jax"],
               rows),
    ])


def _edits(res) -> str:
    sec = res.get("edits")
    f = _failed(sec)
    if f:
        return f
    rows = [[r["model"], r["layer"], r["batch"], t(r["edit_render_s"]), g(r["edits_per_s"]),
             g(r.get("sweep_edits_per_s")), g(r["render_per_s"]), g(r.get("generate_per_s"))]
            for r in sec.get("rows", [])]
    out = ["Images per second: `G.render(pj.edit(Z, factors, part, appearance, alpha), layer, ctx)` on a batch, "
           "as public calls; 'strength sweep' edits with several strengths at once (`pj.edit_sweep`, rendered as one "
           "batch).\n",
           _table(["model", "layer", "batch", "edit + render", "edits / s", "strength sweep: edits / s", "render / s",
                   "generate / s"], rows)]
    for s in sec.get("skipped", []):
        out.append(f"- {s['model']}: skipped ({s['reason']})")
    return "\n".join(out)


def _scale(res, plots) -> str:
    sec = res.get("scale")
    f = _failed(sec)
    if f:
        return f
    rows = [[r["devices"], r.get("what", ""), r["padded_samples"], t(r["seconds_per_iteration"]), x(r["speedup_vs_1"]),
             g(r["max_rel_diff_parts"], 2), g(r["max_rel_diff_appearance"], 2), g(r["rel_diff_final_loss"], 2)]
            for r in sec["rows"]]
    out = [f"`pj.fit` of {_shape(sec['shape'])} features, ranks {tuple(sec['ranks'])}, fixed lr, one subprocess per "
           "device count.\n",
           _table(["devices", "", "zero samples padded", "seconds / iteration", "vs 1 device",
                   "max rel. difference, parts", "appearances", "final loss"], rows),
           "", sec.get("note", "")]
    if plots.get("scale"):
        out.append(f"\n![scale]({plots['scale']})\n")
    return "\n".join(out)


def _memory(res, plots) -> str:
    sec = res.get("memory")
    f = _failed(sec)
    if f:
        return f
    rows = [[r["mode"], f"×{r['multiple']}", r["total_samples"], b(r["total_feature_bytes"]), b(r["peak_rss_bytes"]),
             b(r["peak_increase_bytes"]), b(r.get("device_peak_bytes")), t(r.get("seconds"))]
            for r in sec["rows"]]
    out = [sec.get("note", ""), "",
           _table(["mode", "samples", "total samples", "total features", "peak RSS", "increase over pre-fit RSS",
                   "device peak (where kept)", "fit seconds"], rows)]
    comp = [c for c in sec.get("compiled", []) if "temp_bytes" in c]
    if comp:
        out += ["", f"Compiled programs for the materialised fit of {comp[0]['samples']} samples "
                    f"({b(comp[0]['feature_bytes'])} of features):\n",
                _table(["program", "temporaries", "temporaries / features"],
                       [[c["program"], b(c["temp_bytes"]), g(c["temp_over_features"], 3)] for c in comp])]
    if plots.get("memory"):
        out.append(f"\n![memory]({plots['memory']})\n")
    return "\n".join(out)


def _phases(run: dict) -> str:
    """A panda-jax run's phases (its ``--timings`` line, and the rest of the wall time)."""
    ph = run.get("phases")
    if not ph:
        return ""
    return (f"start, imports and exit {t(ph['startup_and_exit_s'])}, model {t(ph['model_s'])}, features "
            f"{t(ph['features_s'])}, fit {t(ph['fit_s'])} ({ph['steps']} steps {t(ph['steps_s'])}), write "
            f"{t(ph['write_s'])}")


def _wall(run: dict) -> str:
    """A run's wall time, with the range over its repeats when there were several."""
    walls = run.get("runs_wall_s") or []
    rng = f" ({t(min(walls))} to {t(max(walls))})" if len(walls) > 1 else ""
    return t(run["process_wall_s"]) + rng


def _end_to_end(res) -> str:
    sec = res.get("end_to_end")
    if not isinstance(sec, dict):
        return "Not measured in this run."
    if "error" in sec:
        return f"Failed: {sec['error']}"
    p, o = sec["plan"], sec["original"]
    cold, warm = sec["panda_jax_first_run"], sec["panda_jax_cached_run"]
    shape = _shape(o.get("features_shape", []))
    rows = [
        ["original pipeline (PyTorch generator, Algorithm 1 in the original order)", t(o["process_wall_s"]),
         f"imports {t(o['imports_s'])}, model {t(o['model_s'])}, features {t(o['features_s'])}, fit {t(o['fit_s'])}",
         "1x"],
        ["panda-jax, first run (empty cache: compiles every program)", _wall(cold), _phases(cold),
         x(sec["speedup_first_run"])],
        ["panda-jax, second run (compiled programs from the cache)", _wall(warm), _phases(warm),
         x(sec["speedup_cached_run"])],
    ]
    n = len(cold.get("runs_wall_s", [None]))
    repeats = (f" panda-jax's runs were repeated {n} times (each pair with a new cache folder): the median run is "
               "shown with its phases, the range of wall times in brackets; the original pipeline ran once."
               if n > 1 else "")
    return (
        f"A user's first run on the embedded faces DCGAN: layer {p['layer']} features ({shape}), ranks "
        f"({p['ranks'][0]}, {p['ranks'][1]}), {p['steps']} steps with a fixed step size, each side in a new "
        "Python process timed from launch to exit (`benchmarks/end_to_end.py`). panda-jax runs the command a "
        f"user types: `{cold['command'].rsplit(' --out', 1)[0]} --out F.npz -q`, with `--timings` for its "
        "phases ('model' includes importing the generator library; 'fit' includes loading or compiling its "
        "programs and the HOSVD init)." + repeats + "\n\n"
        + _table(["pipeline", "process wall time", "phases", "speed-up"], rows)
    )


def markdown(res: dict, plots: dict | None = None) -> str:
    plots = plots or {}
    meta = res.get("meta", {})
    mode = meta.get("mode", "?")
    head = [
        "# panda-jax benchmarks",
        "",
        f"Measured with `{meta.get('command', 'python -m benchmarks.run')}` ({mode} mode) on {meta.get('started', '?')}; "
        f"{g(meta.get('wall_s'))} s in all. Regenerate with `python -m benchmarks.run --write-results`.",
        "",
    ]
    if mode == "quick":
        head += ["> **Quick mode**: small shapes and few repeats. These numbers show that the tool runs; they say "
                 "little about speed.", ""]
    if meta.get("concurrent_workers"):
        head += ["> The subprocess measurements (scale, memory) ran beside the in-process ones, sharing the CPU.", ""]
    parts = head + [
        "## Machine", "", _machine(res), "",
        "## How to read these numbers", "", HOW_TO_READ,
        "## 1. Full-batch fit: one iteration", "", _sweep(res, plots), "",
        "## 2. Full-batch fit to convergence", "", _convergence(res, plots), "",
        "## 3. Stochastic fit with the generator in the loop", "", _stochastic(res), "",
        "## 4. Refinement", "", _refinement(res), "",
        "## 5. Edits rendered per second", "", _edits(res), "",
        "## 6. Several devices", "", _scale(res, plots), "",
        "## 7. Memory: streaming more samples than fit at once", "", _memory(res, plots), "",
        "## 8. Time to parts, end to end", "", _end_to_end(res), "",
    ]
    failed = meta.get("failed_sections")
    if failed:
        parts += [f"Failed sections: {', '.join(failed)}.", ""]
    return "\n".join(parts)


# ---- plots ------------------------------------------------------------------------------------

ENGINES = (("reference_original_order_s", "reference (original order)", "tab:red"),
           ("torch_same_algebra_s", "torch (same algebra)", "tab:orange"),
           ("panda_jax_s", "panda-jax", "tab:blue"))


def _save(fig, path):
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".png", dir=d)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def plots(res: dict, out: str) -> dict:
    """Write the plots the results allow; returns ``{name: path}``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    written = {}
    sweep = res.get("sweep")
    if isinstance(sweep, dict) and "error" not in sweep:
        fig = Figure(figsize=(10, 4))
        for i, (key, xkey, xlabel) in enumerate((("spatial", "S", "spatial positions S = H·W"),
                                                 ("samples", "n", "samples N"))):
            rows = sweep.get(key, [])
            ax = fig.add_subplot(1, 2, i + 1)
            for k, label, c in ENGINES:
                ax.loglog([r[xkey] for r in rows], [r[k] for r in rows], "o-", color=c, label=label)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("seconds per iteration")
            if rows:
                r0 = rows[0]
                ax.set_title(("N = %d" % r0["n"] if key == "spatial" else "%d×%d" % (r0["size"], r0["size"]))
                             + f", C = {r0['channels']}, R = {tuple(r0['ranks'])}", fontsize=9)
            ax.grid(alpha=0.3, which="both")
            ax.legend(fontsize=8)
        written["sweep"] = _save(fig, os.path.join(out, "sweep.png"))
    conv = res.get("convergence")
    if isinstance(conv, dict) and "error" not in conv:
        fig = Figure(figsize=(10, 4))
        ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        names = {"reference_original_order": ("reference (original order)", "tab:red", "-"),
                 "torch_same_algebra": ("torch (same algebra)", "tab:orange", "--"),
                 "panda_jax": ("panda-jax", "tab:blue", ":"),
                 "panda_jax_auto_lr": ("panda-jax, lr='auto'", "tab:green", "-")}
        for k, losses in conv.get("losses", {}).items():
            label, c, ls = names.get(k, (k, None, "-"))
            spi = conv["engines"].get(k, {}).get("seconds_per_iteration") or float("nan")
            it = list(range(len(losses)))
            ax1.plot(it, losses, ls, color=c, label=label)
            ax2.plot([i * spi for i in it], losses, ls, color=c, label=label)
        for ax, xl in ((ax1, "iteration"), (ax2, "seconds")):
            ax.set_yscale("log")
            ax.set_xlabel(xl)
            ax.set_ylabel("summed loss")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        ax2.set_xscale("log")
        fig.suptitle(f"{conv.get('data', '')}, {_shape(conv['shape'])}, ranks {tuple(conv['ranks'])}", fontsize=9)
        written["convergence"] = _save(fig, os.path.join(out, "convergence.png"))
    mem = res.get("memory")
    if isinstance(mem, dict) and "error" not in mem and mem.get("rows"):
        fig = Figure(figsize=(5.5, 4))
        ax = fig.add_subplot(1, 1, 1)
        for mode, c in (("stream", "tab:blue"), ("full", "tab:red")):
            rows = [r for r in mem["rows"] if r["mode"] == mode]
            label = "pj.fit_stream (streamed)" if mode == "stream" else "pj.fit (materialised)"
            ax.plot([r["total_feature_bytes"] / 1e6 for r in rows], [r["peak_increase_bytes"] / 1e6 for r in rows],
                    "o-", color=c, label=label)
        ax.set_xscale("log")
        ax.set_xlabel("features seen by the fit (MB)")
        ax.set_ylabel("peak RSS during the fit - RSS before it (MB)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        written["memory"] = _save(fig, os.path.join(out, "memory.png"))
    sc = res.get("scale")
    if isinstance(sc, dict) and "error" not in sc and sc.get("rows"):
        fig = Figure(figsize=(5.5, 4))
        ax = fig.add_subplot(1, 1, 1)
        rows = [r for r in sc["rows"] if r.get("what", "").startswith("emulated")]
        ax.bar([str(r["devices"]) for r in rows], [r["seconds_per_iteration"] * 1e3 for r in rows], color="tab:blue")
        for i, r in enumerate(rows):
            ax.annotate(f"Δparts {r['max_rel_diff_parts']:.1e}", (i, r["seconds_per_iteration"] * 1e3),
                        ha="center", va="bottom", fontsize=8)
        ax.set_xlabel("emulated CPU devices (same cores)")
        ax.set_ylabel("ms per iteration")
        written["scale"] = _save(fig, os.path.join(out, "scale.png"))
    return written


# ---- text summary -----------------------------------------------------------------------------


def summary(res: dict) -> str:
    """A few lines for the terminal: the headline ratios and what they mean."""
    meta, rates = res.get("meta", {}), res.get("rates", {})
    m = meta.get("machine", {})
    lines = [f"machine: {m.get('cpu', m.get('processor', '?'))}, {m.get('cpu_count', '?')} cores, "
             f"{m.get('jax_backend', '?')}; matmul {g(rates.get('matmul_gflops'))} GFLOP/s, "
             f"memory {g(rates.get('memory_GBps'))} GB/s ({meta.get('mode', '?')} mode, {g(meta.get('wall_s'))} s)"]
    sw = res.get("sweep")
    if isinstance(sw, dict) and "error" not in sw:
        for key in ("spatial", "samples"):
            if sw.get(key):
                r = sw[key][-1]
                lines.append(f"fit iteration {_shape(r['shape'])}: panda-jax {t(r['panda_jax_s'])}, "
                             f"{x(r['speedup_vs_reference'])} vs reference, {x(r['speedup_vs_torch_same_algebra'])} "
                             f"vs torch (same algebra); {g(r['panda_jax'].get('gflops'))} GFLOP/s, "
                             f"{g(r['panda_jax'].get('feature_GBps'))} GB/s of features")
        sl = sw.get("slopes", {})
        if sl:
            lines.append("growth (log-log slope of time vs S / vs N): " + "; ".join(
                f"{k} {g(v.get('vs_S'), 2)} / {g(v.get('vs_N'), 2)}" for k, v in sl.items() if not k.startswith("flops")))
    cv = res.get("convergence")
    if isinstance(cv, dict) and "error" not in cv:
        e = cv["engines"]
        lines.append("to convergence: " + "; ".join(
            f"{k} {e[k].get('iterations_to_tol')} it / {t(e[k].get('seconds_to_tol'))}" for k in e))
    st = res.get("stochastic")
    if isinstance(st, dict) and "error" not in st:
        for r in st.get("rows", []):
            lines.append(f"fit_stream {r['model']} layer {r['layer']} {_shape(r['shape'])}: "
                         f"{t(r['stream_step_auto_s'])} / step ({g(r['samples_per_s'])} samples/s; generator alone "
                         f"{t(r['generator_s'])} / batch)")
    rf = res.get("refinement")
    if isinstance(rf, dict) and "error" not in rf:
        for r in rf.get("rows", []):
            lines.append(f"refine {r['samples']} sample(s) x {r['steps']} steps: panda-jax {t(r['panda_jax_s'])}, "
                         f"{x(r['speedup_vs_reference'])} vs reference, {x(r['speedup_vs_torch_same_algebra'])} vs "
                         f"torch" + (f", vmapped {x(r['vmap_speedup_vs_singles'])} vs per-sample calls"
                                     if r.get("vmap_speedup_vs_singles") else ""))
    ed = res.get("edits")
    if isinstance(ed, dict) and "error" not in ed:
        lines.append("edits rendered per second: " + "; ".join(
            f"{r['model']} layer {r['layer']} {g(r['edits_per_s'])}" for r in ed.get("rows", [])))
    sc = res.get("scale")
    if isinstance(sc, dict) and "error" not in sc:
        lines.append("sharded fit: " + "; ".join(
            f"{r['devices']} dev {t(r['seconds_per_iteration'])}/it, parts differ {g(r['max_rel_diff_parts'], 2)}"
            for r in sc["rows"]))
        lines.append("  (emulated devices share the same cores: no speed-up expected; the check is that it runs "
                     "and matches)")
    mm = res.get("memory")
    if isinstance(mm, dict) and "error" not in mm:
        lines.append("peak RSS (increase during the fit): " + "; ".join(
            f"{r['mode']} x{r['multiple']} {b(r['peak_rss_bytes'])} (+{b(r['peak_increase_bytes'])})"
            for r in mm["rows"]))
    for name in meta.get("failed_sections", []):
        lines.append(f"FAILED {name}: {res.get(name, {}).get('error', '?')}")
    return "\n".join(lines)
