"""One small error hierarchy: every user error is a ``PandaError`` (a ``ValueError``).

Messages name the bad value, what was expected, and the fix. The command line prints the
message on one line and exits with status 2.
"""


class PandaError(ValueError):
    """A user error: bad input, bad file, bad setting."""


class FeatureError(PandaError):
    """Feature maps of the wrong rank, shape, dtype, or with non-finite values."""


class RankError(PandaError):
    """Ranks that do not fit the features (``R_C > C`` or ``R_S > S``) or are not positive."""


class LayerError(PandaError):
    """A layer index the generator does not have."""


class FactorsError(PandaError):
    """Factor files that cannot be read, or factors whose shapes do not fit."""


class DirectionsError(PandaError):
    """Latent direction files that cannot be read, or directions that do not fit the generator."""


class CheckpointError(PandaError):
    """A checkpoint that is missing, unreadable, unsafe, or of another architecture."""


class ConfigError(PandaError):
    """A bad setting: step counts, learning rates, thresholds, unknown names."""


class DivergenceError(PandaError):
    """The fit produced a non-finite loss."""


class ConvergenceWarning(UserWarning):
    """A fit stopped at ``steps`` before meeting its ``tol`` (as scikit-learn's)."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """``"TypeName: first line of the message"`` (cut at ``limit``), for one-line error texts."""
    text = str(e).splitlines()
    return f"{type(e).__name__}: {text[0][:limit]}" if text else type(e).__name__
