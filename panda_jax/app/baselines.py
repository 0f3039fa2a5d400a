"""The baselines on a real generator: SeFa, GANSpace and ReSeFa directions, and latent edits.

:mod:`panda_jax.directions` holds the maths as functions of arrays; this module is the glue that
needs a generator (its first projection weights, its mapping, its Jacobians). Directions live in
the generator's W space where it has one (StyleGAN/2/3: ``space="w"``, applied to the w+ rows
``layers``), else in z (DCGAN, PGGAN, BigGAN: ``space="z"``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from panda_jax import directions as D
from panda_jax.errors import ConfigError


@dataclass(frozen=True)
class LatentEdit:
    """Directions in a generator's latent space and how to apply them."""

    method: str
    space: str  # "z", "w" (one offset for the w+ rows edited) or "w+" (dim = num_ws * w_dim, one per row)
    directions: np.ndarray  # [k, dim], unit rows (published ones as stored)
    values: np.ndarray  # eigenvalues / quotients / standard deviations, one per direction
    layers: tuple[int, int] | None = None  # w+ rows [start, end) edited (space "w")
    seconds: float = 0.0  # time to discover the directions
    meta: dict = field(default_factory=dict)
    rows: tuple[int, ...] | None = None  # explicit w+ rows edited (space "w"); overrides ``layers``

    @property
    def k(self) -> int:
        return int(self.directions.shape[0])


def _space(G) -> str:
    return "w" if getattr(G, "has_w", False) else "z"


def _z(lat):
    return lat.z if hasattr(lat, "z") else jnp.asarray(lat)


def sefa(G, k: int = 10, layers: tuple[int, int] | None = None) -> LatentEdit:
    """SeFa (Shen & Zhou, 2021): eigenvectors of ``W^T W`` of the weights that first project the
    latent (:meth:`Generator.first_projection_weights`); for style generators the style affine
    layers of the w+ rows ``layers`` (default: all), and the edit moves those rows."""
    t = time.perf_counter()
    if G.has_w:
        rows = layers or (0, G.num_ws)
        W = G.first_projection_weights(list(range(*rows)))
    else:
        if layers is not None:
            raise ConfigError(f"{G.family} has no w+ rows; SeFa edits its z (drop layers)")
        rows, W = None, G.first_projection_weights()
    d = D.sefa(np.asarray(W), k)
    return LatentEdit("SeFa", _space(G), np.asarray(d.directions), np.asarray(d.values), rows,
                      time.perf_counter() - t)


def _w_sampler(G):
    from flax import nnx

    graphdef, state = nnx.split(G.mapping)
    z_dim = G.z_dim

    def sample_w(args, key, n):
        return nnx.merge(graphdef, args)(jax.random.normal(key, (n, z_dim), jnp.float32))

    return sample_w, state


def ganspace(G, k: int = 10, n_samples: int = 100_000, key=None, layer: int | None = None,
             batch_size: int = 1024, layers: tuple[int, int] | None = None) -> LatentEdit:
    """GANSpace (Härkönen et al., 2020): PCA of many samples, streamed. Style generators: PCA of
    w (edits move the w+ rows ``layers``). Others: PCA of the features at ``layer`` (default the
    first), carried back to z by linear regression of z on the PCA coordinates, as upstream."""
    key = jax.random.key(0) if key is None else key
    t = time.perf_counter()
    if G.has_w:
        fn, args = _w_sampler(G)
        pca = D.ganspace(fn, n_samples, k, key=key, batch_size=batch_size, sample_args=args)
        dirs, values = np.asarray(pca.components), np.asarray(pca.stdev)
        rows = layers or (0, G.num_ws)
        meta = {"explained_variance_ratio": np.asarray(pca.explained_variance_ratio).tolist()}
    else:
        layer = min(G.layers) if layer is None else G.check_layer(layer)
        fn, args = G.sample_fn(layer)

        def flat(args, key, n):
            return fn(args, key, n).reshape(n, -1)

        def pair(args, key, n):
            return _z(G.sample_latents(key, n)), fn(args, key, n).reshape(n, -1)

        pca = D.ganspace(flat, n_samples, k, key=key, batch_size=batch_size, sample_args=args)
        regress = min(n_samples, 10_000 if n_samples >= 10_000 else n_samples)
        dz = D.ganspace_regress(pair, pca, regress, key=jax.random.fold_in(key, 1), batch_size=batch_size,
                                sample_args=args)
        dirs, values, rows = np.asarray(dz), np.asarray(pca.stdev), None
        meta = {"feature_layer": int(layer), "explained_variance_ratio": np.asarray(pca.explained_variance_ratio).tolist()}
    return LatentEdit("GANSpace", _space(G), dirs, values, rows, time.perf_counter() - t, meta)


def resefa(G, lat, mask, k: int = 5, chunk_size: int = 1, tau: float = 0.0) -> LatentEdit:
    """ReSeFa (Zhu et al., 2022): directions that move the region ``mask`` (``[H, W]`` at image
    resolution) and leave the rest, from the generator's Jacobians at the samples ``lat``
    (pooled Gram matrices, generalised Rayleigh quotient). Style generators: Jacobians with
    respect to w (all w+ rows moved together); others: with respect to z."""
    t = time.perf_counter()
    z = _z(lat)
    if G.has_w:
        fn, args = G.image_fn_w()
        num_ws = G.num_ws

        def image(args, w):
            return fn(args, jnp.broadcast_to(w[:, None, :], (w.shape[0], num_ws, w.shape[1])))

        x = G.wp(z)[:, 0]
        rows = (0, num_ws)
    else:
        fn, args = G.image_fn()

        def image(args, zz):
            return fn(args, zz)

        x, rows = z, None

    def one(args, v):
        return image(args, v[None])[0]

    grams = D.region_grams_from_fn(one, x, jnp.asarray(mask, jnp.float32), chunk_size=chunk_size, fn_args=args)
    d = D.resefa_from_grams(grams, k, tau=tau)
    return LatentEdit("ReSeFa", _space(G), np.asarray(d.directions), np.asarray(d.values), rows,
                      time.perf_counter() - t)


def from_directions(method: str, G, dirs, values=None, layers=None) -> LatentEdit:
    """A :class:`LatentEdit` from directions of another source (published files)."""
    dirs = np.asarray(dirs, np.float32)
    dim = G.w_dim if G.has_w else G.z_dim
    if dirs.ndim == 1:
        dirs = dirs[None]
    if dirs.ndim != 2 or dirs.shape[1] != dim:
        raise ConfigError(
            f"the directions have shape {dirs.shape}; this {G.family} edits a {'w' if G.has_w else 'z'} of {dim} values"
        )
    values = np.ones(len(dirs), np.float32) if values is None else np.asarray(values, np.float32)
    rows = (tuple(layers) if layers else (0, G.num_ws)) if G.has_w else None
    return LatentEdit(method, _space(G), dirs, values, rows)


def from_published(G, d, space: str | None = None, layers=None, method: str | None = None) -> LatentEdit:
    """A :class:`LatentEdit` of published directions (:func:`panda_jax.directions.load_directions`),
    checked against ``G``'s latent sizes; ``space`` and ``layers`` (w+ rows) override the file's."""
    d = D.fit_directions(d, z_dim=G.z_dim, w_dim=G.w_dim if G.has_w else None,
                         num_ws=G.num_ws if G.has_w else None, space=space, layers=layers)
    values = np.ones(len(d), np.float32) if d.values is None else d.values
    meta = {"format": d.format}
    if d.stdev is not None:
        meta["stdev"] = d.stdev.tolist()
    return LatentEdit(method or d.format, d.space, d.directions, values, None, meta=meta, rows=d.layers)


def edited_images(G, lat, edit: LatentEdit, index: int, alpha, truncation: float = 1.0):
    """Images of the latents ``lat`` moved by ``alpha`` along direction ``index`` of ``edit``
    (``alpha`` a scalar or one value per sample)."""
    d = jnp.asarray(edit.directions[index], jnp.float32)
    z = _z(lat)
    a = jnp.asarray(alpha, jnp.float32).reshape(-1, 1)
    if edit.space == "w+":
        wp = G.wp(lat, truncation)
        return G.generate_from_wp(wp + a[:, :, None] * d.reshape(1, G.num_ws, -1))
    if edit.space == "w":
        wp = G.wp(lat, truncation)
        if edit.rows is not None:
            mask = np.zeros((1, G.num_ws, 1), np.float32)
            mask[0, list(edit.rows)] = 1.0
            return G.generate_from_wp(wp + jnp.asarray(mask) * (a * d[None])[:, None, :])
        start, end = edit.layers
        wp = wp.at[:, start:end].add((a * d[None])[:, None, :])
        return G.generate_from_wp(wp)
    if hasattr(lat, "z"):
        return G.generate(lat._replace(z=z + a * d[None]), truncation)
    return G.generate(z + a * d[None], truncation)
