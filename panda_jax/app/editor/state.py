"""The editor's request types: what a request asks for once it has been checked."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from panda_jax.errors import ConfigError


class RequestError(ConfigError):
    """A request the editor refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class EditSpec:
    """One edit of the stack: ``appearance`` at ``part`` (an index) or at ``mask`` (``[h, w]``
    in [0, 1] on the feature grid), with strength ``alpha``."""

    appearance: int
    alpha: float
    part: int | None = None
    mask: np.ndarray | None = None


@dataclass(frozen=True)
class State:
    """What the page shows: a sample (``("seed", s)`` or ``("latent", id)``), whether the parts
    are refined for it, and the edit stack."""

    sample: tuple
    refine: bool
    edits: tuple
