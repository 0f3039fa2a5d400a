"""Images per second of ``generate`` and of ``render`` from a middle layer, per generator family.

    python -m benchmarks.gen_speed [--batch 8] [--out FILE.json] [--write-results]

Runs on the checkpoints under the test vectors (small random-initialised models in the real
on-disk formats; no real weights can be fetched here) and on the embedded faces DCGAN.
Timed after warm-up (compilation excluded) with ``block_until_ready``. ``--write-results``
replaces this script's section of ``benchmarks/RESULTS.md`` and leaves the others.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile

import jax

import convert
import ported_gens

from .common import machine, time_jax
from .generators import TESTVECTORS, checkpoint
from .report import g

SECTION = "## Generators: images per second (`python -m benchmarks.gen_speed`)"

MODELS = {
    # name: (source: 'dcgan' or a path under the test vectors, layer to render from)
    "dcgan_faces64": ("dcgan", 2),
    "pggan (test model)": ("pggan_genforce/checkpoint.pth", 4),
    "stylegan (test model)": ("stylegan_genforce/checkpoint.pth", 5),
    "stylegan2 (test model)": ("stylegan2_genforce/checkpoint.pth", 4),
    "stylegan2-ada nvlabs (test model)": ("stylegan2_ada_nvlabs/G_ema.pt", 4),
    "stylegan3-t (test model)": ("stylegan3_t/G_ema.pt", 7),
    "stylegan3-r (test model)": ("stylegan3_r/G_ema.pt", 7),
    "biggan-deep (test model)": ("biggan_deep", 5),
}


def measure(src: str, layer: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        convert.convert(checkpoint(src) if src == "dcgan" else os.path.join(TESTVECTORS, src), os.path.join(d, "m"))
        G = ported_gens.load(os.path.join(d, "m"))
        lat = G.sample_latents(jax.random.key(0), batch)
        Z, ctx = G.features(lat, layer)
        t_gen = time_jax(lambda: G.generate(lat), repeat=5)
        t_ren = time_jax(lambda: G.render(Z, layer, ctx), repeat=5)
        img = G.generate(lat)
    return {
        "family": G.family,
        "image_shape": list(img.shape[1:]),
        "layer": layer,
        "feature_shape": list(G.layers[layer]),
        "batch": batch,
        "generate_images_per_s": batch / t_gen,
        "render_images_per_s": batch / t_ren,
    }


def section(res: dict) -> str:
    """The RESULTS.md section for :func:`main`'s results."""
    m = res["machine"]
    cpu = m.get("cpu") or m.get("processor") or "?"
    batch = next(iter(res["results"].values()))["batch"] if res["results"] else "?"
    lines = [SECTION, "",
             f"Machine: {cpu}, {m.get('cpu_count')} cores, JAX {m.get('jax')} on {m.get('jax_backend')}. Batch {batch}, "
             "float32, after warm-up (compilation excluded). The StyleGAN/PGGAN/BigGAN rows are the small "
             "random-initialised test-vector models in the real formats (no real weights can be fetched here); the "
             "DCGAN is the embedded pretrained faces model. (This section is written by `benchmarks.gen_speed "
             "--write-results`; `benchmarks.run --write-results` rewrites the sections above.)", "",
             "| model | image | render from layer (Z shape) | generate img/s | render img/s |",
             "|---|---|---|---|---|"]
    for name, r in res["results"].items():
        shape = "x".join(map(str, r["image_shape"]))
        z = "x".join(map(str, r["feature_shape"]))
        lines.append(f"| {name} ({r['family']}) | {shape} | {r['layer']} ({z}) | {g(r['generate_images_per_s'])} | "
                     f"{g(r['render_images_per_s'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--out", default=None, help="also write the results to this JSON file")
    ap.add_argument("--write-results", action="store_true", help="replace this section of benchmarks/RESULTS.md")
    a = ap.parse_args(argv)
    res = {"machine": machine(), "results": {}}
    for name, (src, layer) in MODELS.items():
        res["results"][name] = measure(src, layer, a.batch)
        r = res["results"][name]
        print(f"{name:40s} {r['image_shape']}  generate {r['generate_images_per_s']:8.1f} img/s   "
              f"render from layer {layer} {r['render_images_per_s']:8.1f} img/s", flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump(res, f, indent=2)
    if a.write_results:
        from .common import replace_section

        replace_section(SECTION, section(res))
    return res


if __name__ == "__main__":
    main()
