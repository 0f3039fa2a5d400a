"""Time to parts, end to end: a user's first run on the embedded faces DCGAN, in fresh processes.

    python -m benchmarks.end_to_end [--quick]        (also a section of ``python -m benchmarks.run``)

panda-jax: the command a user types, ``panda-jax fit default --layer L --ranks RC RS --samples N
--steps T --lr LR --out F.npz``, in a new process, twice: first with an empty cache folder
(``PANDA_JAX_CACHE``: the checkpoint is converted and every program compiled), then again with the
cache the first run left (JAX's persistent compilation cache is reused; the checkpoint is converted
again, without torch, in about 0.2 s).
The original pipeline: a new Python process that imports torch, reads the same checkpoint, runs the
PyTorch generator (the DCGAN tutorial's ``nn.Sequential``) for the same samples, takes the layer's
output with a forward hook, initialises the appearances by HOSVD and runs Algorithm 1 in the
original's operation order (``benchmarks.torch_reference.decompose``) for the same number of steps.
Both sides take a fixed step (the original's kind of learning rate), so they do the same iterations;
each reports its own phases (panda-jax with ``--timings``: model, features, fit, write; the rest of
its wall time is starting Python, imports and exit) and the whole process is timed from outside.
panda-jax's two runs are repeated (three times in full mode, each pair with its own empty cache
folder) and the run with the median wall time is reported with its phases; the original pipeline
(minutes) runs once. The project's modules are byte-compiled first, as installing a package does,
so that no run compiles Python sources (this matters where ``PYTHONDONTWRITEBYTECODE`` is set).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PLANS = {
    "quick": {"layer": 3, "ranks": [32, 8], "samples": 16, "steps": 10, "lr": 1e-6, "repeats": 1},
    "full": {"layer": 3, "ranks": [64, 8], "samples": 256, "steps": 300, "lr": 1e-6, "repeats": 3},
}
PACKAGES = ("panda_jax", "convert", "ported_gens", "benchmarks")


def compile_bytecode() -> None:
    """Byte-compile the project's modules, as ``pip install`` does for an installed package (and
    Python on a module's first import, unless ``PYTHONDONTWRITEBYTECODE`` is set): a user's runs
    load them compiled instead of compiling about 60 sources, some 0.2 s, each time."""
    import compileall

    for pkg in PACKAGES:
        compileall.compile_dir(os.path.join(ROOT, pkg), quiet=1)


def median_run(runs: list[dict]) -> dict:
    """The run with the median wall time (the lower middle of an even count), with every run's wall
    time in launch order as ``runs_wall_s``."""
    mid = sorted(runs, key=lambda r: r["process_wall_s"])[(len(runs) - 1) // 2]
    return {**mid, "runs_wall_s": [r["process_wall_s"] for r in runs]}


def _env(extra=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update(extra or {})
    return env


def _cli():
    exe = os.path.join(os.path.dirname(sys.executable), "panda-jax")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "panda_jax.app.cli"]


def panda_run(plan: dict, cache: str, out: str) -> dict:
    """One ``panda-jax fit`` in a new process; seconds from launch to exit."""
    args = ["fit", "default", "--layer", str(plan["layer"]), "--ranks", *map(str, plan["ranks"]),
            "--samples", str(plan["samples"]), "--steps", str(plan["steps"]), "--lr", str(plan["lr"]),
            "--seed", "0", "--out", out, "-q"]
    cmd = _cli() + args + ["--timings"]
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=_env({"PANDA_JAX_CACHE": cache}), capture_output=True, text=True,
                       timeout=1800)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(f"panda-jax fit failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()[-400:]}")
    from panda_jax.app.commands.fit import parse_timings

    phases = parse_timings(p.stdout)
    if phases is None:
        raise RuntimeError(f"panda-jax fit printed no timings line: {p.stdout.strip()[-400:]}")
    # What the command does not time itself: starting Python, importing panda-jax and JAX, exiting.
    phases["startup_and_exit_s"] = wall - sum(phases[k] for k in ("model_s", "features_s", "fit_s", "write_s"))
    return {"process_wall_s": wall, "phases": phases,
            "command": " ".join(["panda-jax"] + args)}


def original_run(plan: dict) -> dict:
    """The original pipeline in a new process (this module with ``--original``)."""
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "benchmarks.end_to_end", "--original", json.dumps(plan)], cwd=ROOT,
                       env=_env(), capture_output=True, text=True, timeout=7200)
    wall = time.perf_counter() - t
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"original pipeline failed (exit {p.returncode}): {(p.stderr or p.stdout).strip()[-400:]}")
    out = json.loads(lines[-1][len("RESULT "):])
    out["process_wall_s"] = wall
    return out


def _original_main(plan: dict) -> dict:
    """Runs inside the fresh process: the original pipeline, phase by phase."""
    t0 = time.perf_counter()
    import numpy as np
    import torch

    from torch import nn

    from . import torch_reference as ref  # numpy and torch only: the original's algorithm

    phases = {"imports_s": time.perf_counter() - t0}
    t = time.perf_counter()
    # The checkpoint as the original reads it (torch.load), the DCGAN tutorial's generator.
    import importlib.util

    folder = os.path.dirname(importlib.util.find_spec("gan_face_generate").origin)
    sd = torch.load(os.path.join(folder, "weights.tar"), map_location="cpu", weights_only=True)["netG_state_dict"]
    w = [sd[f"main.{3 * i}.weight"].shape[1] for i in range(4)]
    nz = sd["main.0.weight"].shape[0]
    layers = [nn.ConvTranspose2d(nz, w[0], 4, 1, 0, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(True)]
    for i in range(1, 4):
        layers += [nn.ConvTranspose2d(w[i - 1], w[i], 4, 2, 1, bias=False), nn.BatchNorm2d(w[i]), nn.ReLU(True)]
    layers += [nn.ConvTranspose2d(w[-1], 3, 4, 2, 1, bias=False), nn.Tanh()]
    holder = nn.Module()
    holder.main = nn.Sequential(*layers)
    holder.load_state_dict(sd)
    net = holder.main.eval()
    phases["model_s"] = time.perf_counter() - t
    t = time.perf_counter()
    layer = plan["layer"]
    grabbed = []
    # Block l of the tutorial generator is (ConvTranspose2d, BatchNorm2d, ReLU): its output is module 3l - 1.
    hook = net[3 * layer - 1].register_forward_hook(lambda m, i, o: grabbed.append(o))
    torch.manual_seed(0)
    with torch.no_grad():
        for i in range(0, plan["samples"], 64):
            n = min(64, plan["samples"] - i)
            net(torch.randn(n, net[0].in_channels, 1, 1))
    hook.remove()
    feats = torch.cat(grabbed)  # [N, C, H, W]
    Z = feats.reshape(feats.shape[0], feats.shape[1], -1).contiguous()  # the original's [N, C, S]
    phases["features_s"] = time.perf_counter() - t
    t = time.perf_counter()
    rc, rs = plan["ranks"]
    Uc = ref.hosvd(Z)[:, :rc].contiguous()
    Us = torch.rand(Z.shape[2], rs) * 1e-2
    Uc, Us = ref.decompose(Z, Uc, Us, plan["lr"], plan["steps"])
    phases["fit_s"] = time.perf_counter() - t
    phases["final_parts_finite"] = bool(np.isfinite(Us.numpy()).all())
    phases["features_shape"] = [int(Z.shape[0]), int(feats.shape[2]), int(feats.shape[3]), int(Z.shape[1])]
    phases["in_process_s"] = time.perf_counter() - t0
    return phases


def section(plan: dict) -> dict:
    """Both sides, each in fresh processes: panda-jax cold, panda-jax with its caches (``repeats``
    pairs, each with a new cache folder; the median run of each kind), the original once."""
    compile_bytecode()
    colds, warms = [], []
    with tempfile.TemporaryDirectory(prefix="panda-e2e-") as tmp:
        for i in range(plan.get("repeats", 1)):
            cache = os.path.join(tmp, f"cache{i}")
            colds.append(panda_run(plan, cache, os.path.join(tmp, f"a{i}.npz")))
            warms.append(panda_run(plan, cache, os.path.join(tmp, f"b{i}.npz")))
    cold, warm = median_run(colds), median_run(warms)
    orig = original_run(plan)
    return {
        "plan": plan,
        "panda_jax_first_run": cold,
        "panda_jax_cached_run": warm,
        "original": orig,
        "speedup_first_run": orig["process_wall_s"] / cold["process_wall_s"],
        "speedup_cached_run": orig["process_wall_s"] / warm["process_wall_s"],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.end_to_end", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few samples and steps (checks the pipeline)")
    ap.add_argument("--original", metavar="PLAN_JSON", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.original:
        print("RESULT " + json.dumps(_original_main(json.loads(a.original))), flush=True)
        return 0
    print(json.dumps(section(PLANS["quick" if a.quick else "full"]), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
