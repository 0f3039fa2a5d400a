"""The generator in the loop: stochastic fits drawing fresh features every step, and edits
rendered per second, with the DCGAN faces model and the StyleGAN2 test-vector checkpoint.

The generator's parameters enter the jitted fit as ``sample_args`` (``nnx.split`` of the
module, merged back inside ``sample_fn``), not as constants baked into the compiled program.
"""

from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import panda_jax as pj
from panda_jax.factorize import StreamState, _run_stream_chunk

from . import factorize as F
from .common import time_jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTVECTORS = os.environ.get(
    "PANDA_TESTVECTORS", os.path.normpath(os.path.join(ROOT, "..", "shared", "testvectors"))
)


class Unavailable(Exception):
    """A generator's checkpoint is not installed here; the measurement is skipped."""


def checkpoint(name: str) -> str:
    """The checkpoint file of a benchmark generator: ``dcgan`` (the embedded faces model) or
    ``stylegan2`` (the genforce StyleGAN2 test-vector checkpoint)."""
    if name == "dcgan":
        from panda_jax.errors import CheckpointError
        from ported_gens.dcgan import default_checkpoint

        try:
            return default_checkpoint()
        except CheckpointError as e:
            raise Unavailable(str(e)) from None
    if name == "stylegan2":
        path = os.path.join(TESTVECTORS, "stylegan2_genforce", "checkpoint.pth")
        if not os.path.isfile(path):
            raise Unavailable(f"{path} not found; set PANDA_TESTVECTORS to the test-vector folder")
        return path
    raise ValueError(f"unknown benchmark generator {name!r}; use 'dcgan' or 'stylegan2'")


def load(name: str):
    """The converted generator (converted in memory; nothing is written)."""
    import convert

    src = checkpoint(name)
    t = time.perf_counter()
    G = convert.to_generator(src)
    return G, {"checkpoint": os.path.basename(src), "convert_s": time.perf_counter() - t}


def sample_fn_for(G, layer: int, truncation: float = 1.0):
    """``(sample_fn, sample_args)`` for :func:`panda_jax.fit_stream`: ``sample_args`` is the
    module's state (its arrays), ``sample_fn(state, key, n)`` merges it with the static graph
    definition and returns fresh features ``[n, H, W, C]`` at ``layer``."""
    G.check_layer(layer)
    graphdef, state = nnx.split(G)

    def sample_fn(args, key, n):
        model = nnx.merge(graphdef, args)
        Z, _ = model.features(model.sample_latents(key, n), layer, truncation)
        return Z

    return sample_fn, state


def stochastic(name: str, G, layer: int, ranks, batch: int, steps: int, *, hosvd_batches: int = 4,
               repeat: int = 3, rates=None, ref_budget_flops=1e10, detail: bool = True):
    """One stochastic fit with the generator in the loop, timed in pieces.

    ``first_call_s``: the public ``pj.fit_stream`` call (default ``lr="auto"``, HOSVD init from
    ``hosvd_batches`` streamed batches, ``steps`` steps) the first time, compilation included;
    ``stream_step_auto_s``: one step of its jitted loop (generator + fit step), measured on
    the compiled loop; ``generator_s``: one batch of features, measured the same way (a jitted
    loop of draws, so both exclude per-call host overhead); ``fit_only``: one fixed-step fit
    iteration on a batch of the same shape for the three engines (the torch engines run no
    generator here: add ``generator_s`` for a like-for-like total).
    With ``detail``: ``stream_step_s`` (fixed lr), ``end_to_end_s`` (the public call again),
    ``hosvd_init_s`` (the streamed HOSVD init alone)."""
    H, W, C = G.layers[layer]
    sample_fn, args = sample_fn_for(G, layer)
    key = jax.random.key(0)

    @jax.jit
    def draws(args, key):
        def body(i, acc):
            return acc + jnp.sum(sample_fn(args, jax.random.fold_in(key, i), batch))

        return jax.lax.fori_loop(0, steps, body, jnp.float32(0))

    t_gen = time_jax(lambda: draws(args, key), repeat=repeat) / steps

    def public():
        return pj.fit_stream(sample_fn, ranks, steps=steps, batch_size=batch, sample_args=args,
                             hosvd_batches=hosvd_batches, chunk=steps, key=key)

    t = time.perf_counter()
    res = public()
    first = time.perf_counter() - t
    A, P = res.factors.appearance, res.factors.parts
    etas = (jnp.float32(res.lr["parts"]), jnp.float32(res.lr["appearance"]))

    def chunk(auto):
        # The loop pj.fit_stream runs (same static arguments: the compiled program is reused).
        lr = etas if auto else (jnp.float32(min(res.lr.values())),) * 2
        state = StreamState(A + 0, P + 0, lr[0] + 0, lr[1] + 0)
        return _run_stream_chunk(state, key, 0, steps, lr, args, sample_fn=sample_fn, batch_size=batch,
                                 auto=auto, chunk=steps)

    t_step_auto = time_jax(lambda: chunk(True), repeat=repeat) / steps
    fit_only = F.fit_iteration(batch, H, C, ranks, jax_iters=steps, repeat=repeat, ref_budget_flops=ref_budget_flops,
                               rates=rates, auto=False)
    out = {
        "model": name,
        "layer": layer,
        "shape": [batch, H, W, C],
        "ranks": list(ranks),
        "steps": steps,
        "hosvd_batches": hosvd_batches,
        "generator_s": t_gen,
        "stream_step_auto_s": t_step_auto,
        "generator_share": t_gen / t_step_auto,
        "samples_per_s": batch / t_step_auto,
        "fit_only": {
            "reference_original_order_s": fit_only["reference_original_order_s"],
            "reference_scaled": fit_only["reference_scaled"],
            "torch_same_algebra_s": fit_only["torch_same_algebra_s"],
            "panda_jax_s": fit_only["panda_jax_s"],
        },
        "first_call_s": first,
        "first_loss": float(res.losses[0]),
        "final_loss": float(res.losses[-1]),
        "_factors": res.factors,
    }
    if detail:
        out["stream_step_s"] = time_jax(lambda: chunk(False), repeat=repeat) / steps
        out["end_to_end_s"] = time_jax(lambda: public().factors.parts, repeat=max(1, repeat - 1), warmup=0)
        out["hosvd_init_s"] = time_jax(
            lambda: pj.hosvd_init(sample_fn, ranks[0], batches=hosvd_batches, batch_size=batch, sample_args=args),
            repeat=1, warmup=0)
    return out


def edits(name: str, G, layer: int, factors, batch: int, *, alphas: int = 8, repeat: int = 3,
          detail: bool = True):
    """Edited images per second: ``G.render(pj.edit(Z, ...), layer, ctx)`` on a batch (the
    public calls, as a user makes them), with plain rendering for scale. With ``detail``:
    ``alphas`` strengths at once (``pj.edit_sweep`` rendered as one batch) and the whole
    forward (``G.generate``)."""
    lat = G.sample_latents(jax.random.key(1), batch)
    Z, ctx = G.features(lat, layer)
    jax.block_until_ready(Z)
    t_edit = time_jax(lambda: G.render(pj.edit(Z, factors, part=0, appearance=0, alpha=3.0), layer, ctx),
                      repeat=repeat)
    t_render = time_jax(lambda: G.render(Z, layer, ctx), repeat=repeat)
    out = {
        "model": name,
        "layer": layer,
        "batch": batch,
        "edit_render_s": t_edit,
        "edits_per_s": batch / t_edit,
        "render_per_s": batch / t_render,
    }
    if detail:
        al = np.linspace(-5.0, 5.0, alphas).astype(np.float32)
        ctx_k = jax.tree_util.tree_map(lambda a: jnp.concatenate([a] * alphas, axis=0), ctx)

        def sweep():
            Zs = pj.edit_sweep(Z, factors, part=0, appearance=0, alphas=al)
            return G.render(Zs.reshape((-1,) + Zs.shape[2:]), layer, ctx_k)

        t_sweep = time_jax(sweep, repeat=repeat)
        out.update(
            sweep_alphas=alphas,
            sweep_s=t_sweep,
            sweep_edits_per_s=alphas * batch / t_sweep,
            generate_per_s=batch / time_jax(lambda: G.generate(lat), repeat=repeat),
        )
    return out
