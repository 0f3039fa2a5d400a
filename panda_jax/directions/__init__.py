"""The baselines PandA is compared with, as functions of arrays or callables.

* :func:`sefa` (Shen & Zhou, CVPR 2021): eigenvectors of ``W^T W`` of the latent's first weights.

Nothing here imports a generator: pass weights, sample functions or image functions.
"""

from ._common import Directions
from .sefa import normalized_weight, sefa

__all__ = ["Directions", "normalized_weight", "sefa"]
