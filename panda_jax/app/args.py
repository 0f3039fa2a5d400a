"""Argument types and shared options of the command line (argparse)."""

from __future__ import annotations

import argparse
import math

SEED_LIMIT = 1 << 31


def positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {s!r}")
    return v


def seed(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer seed, got {s!r}") from None
    if not -SEED_LIMIT < v < SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"seed {s} is out of range; use an integer of magnitude below 2**31")
    return v


def seeds(s: str) -> list[int]:
    """``7`` or a range ``0-63`` (inclusive)."""
    if "-" in s.lstrip("-"):
        lo, _, hi = s.lstrip("-").partition("-")
        lo = ("-" if s.startswith("-") else "") + lo
        a, b = seed(lo), seed(hi)
        if b < a or b - a >= 100_000:
            raise argparse.ArgumentTypeError(f"seed range {s!r} must go up (A-B with A <= B) and hold < 100000 seeds")
        return list(range(a, b + 1))
    return [seed(s)]


def rows(s: str) -> list[int]:
    """w+ row indices: ``4-7`` (inclusive), ``0,2,5`` or a mix ``0-1,4`` (ReSeFa's and SeFa's syntax)."""
    out: list[int] = []
    for part in s.replace(" ", "").split(","):
        lo, sep, hi = part.partition("-")
        try:
            a = int(lo)
            b = int(hi) if sep else a
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected rows like 4-7 or 0,2,5, got {s!r}") from None
        if a < 0 or b < a or b - a > 10_000:
            raise argparse.ArgumentTypeError(f"row range {part!r} in {s!r} must be A-B with 0 <= A <= B")
        out.extend(range(a, b + 1))
    return sorted(set(out))


def real(s: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {s!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {s!r}")
    return v


def truncation(s: str) -> float:
    v = real(s)
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"truncation must be in (0, 1], got {s!r}")
    return v


def lr(s: str):
    if s == "auto":
        return "auto"
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive number, got {s!r}") from None
    if not v > 0 or not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive number, got {s!r}")
    return v


def threshold(s: str):
    if s == "mean":
        return "mean"
    try:
        v = real(s)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'mean' or a finite number, got {s!r}") from None
    return v


def flatten_seeds(groups) -> list[int]:
    out: list[int] = []
    for g in groups:
        out.extend(g if isinstance(g, list) else [g])
    return out


class HelpFormatter(argparse.HelpFormatter):
    """Shows a default where there is a meaningful one."""

    def _get_help_string(self, action):
        h = action.help or ""
        d = action.default
        if action.required or d is None or d is False or d is argparse.SUPPRESS or "default" in h:
            return h
        if isinstance(d, (list, tuple)):
            return h + " (default: " + " ".join(map(str, d)) + ")"
        return h + " (default: %(default)s)"


def add_common(p):
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors, no progress")


def add_factors_model(p, factors_help: str = "factors file written by `panda-jax fit` (.npz)", optional: bool = False):
    p.add_argument("factors", metavar="FACTORS", help=factors_help, **({"nargs": "?", "default": None} if optional else {}))
    p.add_argument("model", metavar="MODEL", nargs="?", default=None,
                   help="converted model directory or zoo name, checkpoint file or 'default' (default: the "
                        "model the factors were fitted on)")
    p.add_argument("--layer", type=int, default=None, metavar="L",
                   help="layer (default: the one the factors were fitted at)")


def add_seeds(p, default=(0, 1, 2, 3)):
    p.add_argument("--seeds", type=seeds, nargs="+", default=[list(default)], metavar="S",
                   help="one sample per seed; A-B is a range (default: " + " ".join(map(str, default)) + ")")
