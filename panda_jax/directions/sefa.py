r"""SeFa: closed-form factorisation of latent semantics (Shen & Zhou, CVPR 2021).

The first layer that a latent code ``z`` (or a style ``w``) meets is affine,
``y = W z + b`` with ``W [out, D]``; moving ``z`` by ``alpha * n`` moves ``y`` by
``alpha * W n``. SeFa takes the unit directions that move ``y`` the most,

.. math:: n^* = \arg\max_{\|n\| = 1} \|W n\|^2,

the leading eigenvectors of ``W^T W``.

Upstream (``genforce/sefa``, ``utils.py: factorize_weight``) does three things that change the
answer and that this port keeps:

* the weights of several layers are concatenated along the *output* axis (StyleGAN's per-layer
  style affines, ``layer_idx='all'`` by default);
* **each output unit's weight row is scaled to unit L2 norm** before the eigendecomposition.
  Upstream holds the weight transposed, ``[D, out]``, and writes
  ``weight / np.linalg.norm(weight, axis=0, keepdims=True)``: axis 0 there is the latent axis,
  so every output unit (a column there, a row of our ``[out, D]``) is normalised;
* the eigenvectors of ``weight.dot(weight.T)`` (``D x D``, our ``W^T W``) are returned as rows
  with their eigenvalues.

Upstream calls ``np.linalg.eig`` and does not sort, relying on LAPACK's order; here the matrix is
symmetric, so ``eigh`` is used and the pairs are sorted by eigenvalue, largest first (what the
paper's "top-k" means). Eigenvector signs are fixed as in :class:`Directions`.

Edits as upstream's ``sefa.py``: ``wp[:, layers] += d * direction`` on the same w+ rows whose
weights were factorised (:func:`panda_jax.directions.edit_wplus` with that layer range).

Weights per family, in our ``[out, D]`` layout: StyleGAN/StyleGAN2, each synthesis layer's style
affine ``style.weight`` as stored by PyTorch (``[out, w_dim]``); StyleGAN2's last layer is its
``output{idx // 2}`` (ToRGB) affine. PGGAN, the first (dense-as-conv) layer's weight
``[out, z_dim, kh, kw]`` as ``w.transpose(0, 2, 3, 1).reshape(-1, z_dim)`` (upstream flips the
kernel, which only permutes rows and so changes nothing here).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp

from ..errors import FeatureError
from ._common import HIGHEST, Directions, check_float_array, check_k, is_concrete, top_k_eigh


def normalized_weight(weights) -> jax.Array:
    """Concatenate ``[out_l, D]`` weights along ``out`` and scale every row to unit norm, as
    SeFa does before the eigendecomposition. Returns ``[sum_l out_l, D]``."""
    mats = list(weights) if isinstance(weights, (list, tuple)) else [weights]
    if not mats:
        raise FeatureError("weights is an empty list; give at least one [out, latent_dim] weight")
    checked = []
    for i, w in enumerate(mats):
        name = "weights" if len(mats) == 1 else f"weights[{i}]"
        checked.append(check_float_array(w, name, 2, "[out, latent_dim] (PyTorch Linear layout)"))
    dims = {w.shape[1] for w in checked}
    if len(dims) != 1:
        shapes = [tuple(w.shape) for w in checked]
        raise FeatureError(
            f"the weights must share their latent dimension (last axis); got shapes {shapes}. "
            "Transpose any [latent_dim, out] weight with .T"
        )
    w = jnp.concatenate(checked, axis=0) if len(checked) > 1 else checked[0]
    norms = jnp.linalg.norm(w, axis=1, keepdims=True)
    if is_concrete(norms):
        zero = int(jnp.sum(norms == 0))
        if zero:
            raise FeatureError(
                f"{zero} weight rows are all zero and cannot be normalised (SeFa divides every row "
                "by its norm); drop them, e.g. w[jnp.linalg.norm(w, axis=1) > 0]"
            )
    return w / norms


def sefa(weights: jax.Array | Sequence[jax.Array], k: int | None = None) -> Directions:
    """SeFa directions from the weight(s) that act on the latent code.

    Args:
      weights: ``[out, D]`` or a list of such (several layers), PyTorch ``Linear`` layout.
      k: how many directions (``None``: all ``D``).

    Returns:
      :class:`Directions` with ``directions [k, D]`` (unit rows, the eigenvectors of
      ``W^T W`` for the row-normalised, concatenated ``W``) and ``values [k]`` (their
      eigenvalues), largest first; ``method='sefa'``.
    """
    w = normalized_weight(weights)
    k = check_k(k, w.shape[1])
    vals, vecs = _sefa(w, k)
    return Directions(vecs, vals, "sefa")


@functools.partial(jax.jit, static_argnums=1)
def _sefa(w, k):
    return top_k_eigh(jnp.matmul(w.T, w, precision=HIGHEST), k)
