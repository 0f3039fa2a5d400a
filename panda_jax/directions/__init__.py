"""The baselines PandA is compared with, as functions of arrays or callables.

* :func:`sefa` (Shen & Zhou, CVPR 2021): eigenvectors of ``W^T W`` of the latent's first weights.
* :func:`ganspace` (Härkönen et al., NeurIPS 2020): streamed PCA of ``w`` or early features;
  :func:`ganspace_regress` / :func:`latent_directions_by_regression` carry feature components
  to ``z``; :func:`edit_wplus` edits a range of w+ layers.
* :func:`resefa` (Zhu et al., ICML 2022): the generalised Rayleigh quotient of the Jacobian's
  Gram matrices inside and outside a region; :func:`region_grams_from_fn` builds them from an
  image function.

* :func:`load_directions` reads directions others published (ReSeFa's ``.npy`` files, GANSpace's
  components, SeFa's factorisation) into :class:`LatentDirections`; :func:`fit_directions` checks
  them against a generator's latent sizes.

Nothing here imports a generator: pass weights, sample functions or image functions.
"""

from ._common import Directions
from .ganspace import (
    PCA,
    Moments,
    edit_wplus,
    ganspace,
    ganspace_regress,
    latent_directions_by_regression,
    pca_from_moments,
    stream_moments,
)
from .published import LatentDirections, fit_directions, load_directions
from .resefa import RegionGrams, region_grams, region_grams_from_fn, resefa, resefa_from_grams
from .sefa import normalized_weight, sefa

__all__ = [
    "Directions", "LatentDirections", "Moments", "PCA", "RegionGrams", "edit_wplus", "fit_directions",
    "ganspace", "ganspace_regress", "load_directions",
    "latent_directions_by_regression", "normalized_weight", "pca_from_moments", "region_grams",
    "region_grams_from_fn", "resefa", "resefa_from_grams", "sefa", "stream_moments",
]
