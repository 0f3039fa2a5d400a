"""Round trips of the browser editor (``panda-jax serve``) over HTTP, as the page makes them.

    python -m benchmarks.editor_latency [--quick] [--repeat 200] [--cache DIR] [--out FILE.json] [--write-results]

Starts ``panda-jax serve`` on the embedded faces DCGAN (the demo's settings: layer 2, ranks
(32, 8), 128 samples, 200 steps; ``--quick``: 32 samples, 20 steps) as a subprocess, then times
requests on one kept-alive connection, as the page does: from sending the request to the PNG
decoded, for a slider move (one edit, alpha swept), a stack of four edits (one a brushed mask),
a slider move on refined parts, the gallery (every appearance previewed), a new sample, the
saliency view and, when available, a comparison slider. Reports the median and the 95th
percentile of each, the server's own share, the compilations during the run (there should be
none after the warm-up), the start-up times (fit and compile; then again from the caches), and
the machine with its load average. ``--write-results`` replaces the editor section of
``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SECTION = "## Editor latency (`python -m benchmarks.editor_latency`)"


class Server:
    def __init__(self, args, cache):
        exe = os.path.join(os.path.dirname(sys.executable), "panda-jax")
        cmd = [exe] if os.path.exists(exe) else [sys.executable, "-m", "panda_jax.app.cli"]
        env = dict(os.environ, PANDA_JAX_CACHE=cache)
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd + ["serve", "--port", "0", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=env)
        self.lines, self.url = [], None
        done = threading.Event()

        def drain():
            for line in self.proc.stdout:
                self.lines.append(line.rstrip())
                m = re.search(r"ready in [0-9.]+ s: (http://\S+)", line)
                if m:
                    self.url = m.group(1)
                    done.set()
            done.set()

        threading.Thread(target=drain, daemon=True).start()
        done.wait(1800)
        self.start_seconds = time.perf_counter() - t0
        if self.url is None:
            self.stop()
            raise RuntimeError("panda-jax serve did not start:\n" + "\n".join(self.lines))
        u = urllib.parse.urlsplit(self.url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)

    def call(self, path, body=None):
        """``(seconds to the decoded images, JSON)`` on the kept-alive connection."""
        from PIL import Image

        t = time.perf_counter()
        if body is None:
            self.conn.request("GET", path)
        else:
            self.conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
        r = self.conn.getresponse()
        payload = json.loads(r.read())
        if r.status != 200:
            raise RuntimeError(f"{path}: {r.status} {payload}")
        for url in _images(payload):
            Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).load()
        return time.perf_counter() - t, payload

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


def _images(payload):
    for v in payload.values():
        if isinstance(v, str) and v.startswith("data:image/png"):
            yield v
        elif isinstance(v, list):
            for x in v:
                if isinstance(x, str) and x.startswith("data:image/png"):
                    yield x
                elif isinstance(x, dict):
                    yield from _images(x)


def _warm_up(lines):
    for line in lines:
        m = re.search(r"compiled the editor's functions in ([0-9.]+) s", line)
        if m:
            return float(m.group(1))
    return None


def stats(seconds, server_ms):
    ms = 1e3 * np.asarray(seconds)
    return {"n": int(ms.size), "median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)),
            "server_median_ms": float(np.median(server_ms)) if len(server_ms) else None}


def run(quick: bool, repeat: int, cache: str, log=print) -> dict:
    from .common import machine

    fit = ["--samples", "32", "--steps", "20"] if quick else []
    os.makedirs(cache, exist_ok=True)
    fresh = not any(f.startswith("factors-") for f in os.listdir(cache))
    log(f"starting panda-jax serve (cache {cache}{', empty: the factors are fitted first' if fresh else ''})")
    srv = Server(fit, cache)
    out = {"machine": machine(), "quick": quick, "repeat": repeat,
           "load_average_before": list(os.getloadavg()), "startup": {}}
    out["startup"]["first" if fresh else "cached"] = srv.start_seconds
    try:
        _, info = srv.call("/api/info")
        out["model"] = {k: info[k] for k in ("family", "layer", "features", "ranks", "image", "gallery")}
        a = info["alpha"]
        R_C, R_S = info["ranks"]
        lo, hi = info["alpha_range"]
        sweep = np.linspace(lo, hi, repeat)
        mask = (np.add.outer(np.arange(8), np.arange(8)) % 5 == 0).astype(float).tolist()
        seed = {"seed": 0}
        cases = {}

        def measure(name, bodies, path="/api/edit"):
            for b in bodies[:3]:  # the connection and caches warm
                srv.call(path, b)
            secs, server = [], []
            for b in bodies:
                t, p = srv.call(path, b)
                secs.append(t)
                if "ms" in p:
                    server.append(p["ms"])
            cases[name] = stats(secs, server)
            c = cases[name]
            log(f"{name:38s} median {c['median_ms']:7.1f} ms   p95 {c['p95_ms']:7.1f} ms   "
                f"(server {c['server_median_ms'] or float('nan'):.1f} ms, n={c['n']})")

        before = srv.call("/api/info")[1]["compilations"]
        measure("edit: slider move (1 edit)", [{"sample": seed, "edits": [{"part": 2, "appearance": 1, "alpha": float(x)}]}
                                                for x in sweep])
        stack = [{"part": 0, "appearance": 3, "alpha": a}, {"part": 5 % R_S, "appearance": 7 % R_C, "alpha": -a},
                 {"mask": mask, "appearance": 2, "alpha": a}]
        measure("edit: slider move (stack of 4, 1 mask)",
                [{"sample": seed, "edits": stack + [{"part": 1, "appearance": 4, "alpha": float(x)}]} for x in sweep])
        measure("edit: slider move on refined parts",
                [{"sample": seed, "refine": True, "edits": [{"part": 2, "appearance": 1, "alpha": float(x)}]}
                 for x in sweep])
        few = max(10, repeat // 10)
        measure(f"gallery ({min(R_C, info['gallery'])} previews)",
                [{"sample": seed, "edits": [{"part": k % R_S, "appearance": 0, "alpha": a}], "target": 0}
                 for k in range(few)], "/api/gallery")
        measure("new sample (features, part maps)", [{"sample": {"seed": 1000 + i}} for i in range(few)], "/api/sample")
        measure("saliency and background removal",
                [{"sample": seed, "edits": [{"part": 2, "appearance": 1, "alpha": a}], "appearance": i % R_C}
                 for i in range(few)], "/api/saliency")
        if info["compare"]:
            body = {"sample": seed, "edits": [{"part": 2, "appearance": 1, "alpha": a}], "target": 0}
            t, p = srv.call("/api/compare", {**body, "sample": {"seed": 4242}})
            cases["compare: first (directions chosen, ReSeFa Jacobian)"] = {"n": 1, "median_ms": 1e3 * t,
                                                                           "p95_ms": 1e3 * t,
                                                                           "server_median_ms": p["ms"]}
            log(f"compare first: {1e3 * t:.0f} ms")
            g = p["methods"][1]["alpha"]
            measure("compare: a baseline's slider", [{**body, "alphas": {"GANSpace": float(g * s)}}
                                                     for s in np.linspace(-2, 2, few)], "/api/compare")
        after = srv.call("/api/info")[1]["compilations"]
        out["compilations_during_run"] = after["total"] - before["total"]
        out["compilations_after_warm_up"] = after["total"] - after["ready"]
        out["server_timings"] = srv.call("/api/info")[1]["timings"]
        out["cases"] = cases
    finally:
        srv.stop()
    out["load_average_after"] = list(os.getloadavg())
    out["warm_up"] = {"first" if fresh else "cached": _warm_up(srv.lines)}
    log("restarting from the caches")
    again = Server(fit, cache)
    again.stop()
    out["startup"]["cached"] = again.start_seconds
    out["warm_up"]["cached"] = _warm_up(again.lines)
    log(f"start-up: {', '.join(f'{k} {v:.1f} s' for k, v in out['startup'].items())}")
    return out


def markdown(res) -> str:
    m = res["machine"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else m.get("cpu_count")
    la = ", ".join(f"{x:.1f}" for x in res["load_average_before"])
    lb = ", ".join(f"{x:.1f}" for x in res["load_average_after"])
    md = res["model"]
    lines = [
        SECTION, "",
        f"Machine: {m.get('cpu', m.get('processor'))}, {cores} cores, JAX {m['jax']} on {m['jax_backend']}; "
        f"load average (1, 5, 15 min) {la} before and {lb} after (the machine is shared: other work ran "
        f"alongside). Model: the embedded faces DCGAN ({md['family']}, {md['image'][0]}x{md['image'][1]}), layer "
        f"{md['layer']} ({'x'.join(map(str, md['features']))}), ranks {tuple(md['ranks'])}"
        f"{', quick fit' if res['quick'] else ', the demo fit (128 samples, 200 steps)'}. Each request goes over one "
        "kept-alive HTTP connection, as the page's, and is timed from sending it to the PNG(s) decoded; "
        f"the server's own time is in brackets. Compilations during the run: {res['compilations_during_run']} "
        f"(after the warm-up: {res['compilations_after_warm_up']}).", "",
        "| request | n | median | p95 | server median |", "|---|---|---|---|---|",
    ]
    for name, c in res["cases"].items():
        s = f"{c['server_median_ms']:.1f} ms" if c["server_median_ms"] is not None else "–"
        lines.append(f"| {name} | {c['n']} | {c['median_ms']:.1f} ms | {c['p95_ms']:.1f} ms | {s} |")
    st, wu = res["startup"], res["warm_up"]
    parts = []
    if "first" in st:
        parts.append(f"first start (fit the factors, compile) {st['first']:.0f} s, of which the warm-up "
                     f"{wu['first']:.1f} s")
    if "cached" in st:
        parts.append(f"a start with the factors and compiled programs cached {st['cached']:.0f} s, of which the "
                     f"warm-up {wu['cached']:.1f} s (the rest: importing JAX and torch, converting the checkpoint)")
    lines += ["", "Start-up: " + "; ".join(parts) + ". The target for a slider move is a median under 150 ms.", ""]
    return "\n".join(lines)


def write_results(text: str, path: str = os.path.join(HERE, "RESULTS.md")):
    from .common import replace_section

    replace_section(SECTION, text, path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a small fit (32 samples, 20 steps)")
    ap.add_argument("--repeat", type=int, default=200, help="slider moves timed per case")
    ap.add_argument("--cache", default=None, help="the editor's cache (default: a new temporary folder, so the "
                                                  "first start fits and compiles)")
    ap.add_argument("--out", default=None, help="also write the results to this JSON file")
    ap.add_argument("--write-results", action="store_true", help="replace the editor section of benchmarks/RESULTS.md")
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        res = run(a.quick, a.repeat, a.cache or tmp)
    text = markdown(res)
    print("\n" + text)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)
    if a.write_results:
        write_results(text)
    return res


if __name__ == "__main__":
    main()
