"""ImageNet's 1000 class names (BigGAN's classes): names, synonyms and WordNet ids to indices.

:func:`class_index` resolves one name (case-insensitive, ``_`` = space; unknown or ambiguous
names raise a ConfigError listing candidates); :func:`class_indices` turns an index, a name, or
a list of them into one index per sample.
"""

from __future__ import annotations

import difflib
from functools import lru_cache
from importlib import resources

import jax
import numpy as np

from panda_jax.errors import ConfigError


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``((wordnet_id, (name, synonyms...)), ...)`` for the 1000 ImageNet classes, in index order."""
    text = resources.files("ported_gens").joinpath("imagenet_classes.txt").read_text(encoding="utf-8")
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        idx, wnid, names = line.split("\t")
        assert int(idx) == len(out), "imagenet_classes.txt is out of order"
        out.append((wnid, tuple(s.strip() for s in names.split(","))))
    return tuple(out)


@lru_cache(maxsize=1)
def _name_table():
    table: dict[str, list[tuple[int, bool]]] = {}
    for i, (wnid, names) in enumerate(imagenet_classes()):
        table.setdefault(wnid.lower(), []).append((i, True))
        for j, name in enumerate(names):
            table.setdefault(_norm(name), []).append((i, j == 0))
    return table


def _describe(i: int) -> str:
    return f"{imagenet_classes()[i][1][0]!r} ({i})"


def class_index(name: str) -> int:
    """The ImageNet class index of a class name, synonym or WordNet id (case-insensitive,
    ``_`` = space). Unknown or ambiguous names raise a ConfigError listing candidates."""
    key = _norm(name)
    hits = _name_table().get(key, [])
    primary = sorted({i for i, main in hits if main})
    cands = primary or sorted({i for i, _ in hits})
    if len(cands) == 1:
        return cands[0]
    if cands:
        raise ConfigError(
            f"ImageNet class name {name!r} is ambiguous: " + ", ".join(_describe(i) for i in cands)
            + "; pass the class index instead"
        )
    table = _name_table()
    names = [k for k in table if not (k.startswith("n") and k[1:].isdigit())]
    close = difflib.get_close_matches(key, names, n=6, cutoff=0.6)
    words = set(key.split())
    close += [k for k in names if words and words <= set(k.replace("-", " ").split()) and k not in close]
    seen, listed = set(), []
    for k in close:
        for i, _ in table[k]:
            if i not in seen:
                seen.add(i)
                listed.append(f"{k!r} ({i})")
    hint = ("; close matches: " + ", ".join(listed[:12])) if listed else ""
    raise ConfigError(
        f"unknown ImageNet class name {name!r}{hint}; pass one of these names, a WordNet id such as "
        "'n02119022', or a class index 0..999"
    )


def class_indices(classes, n: int, num_classes: int = 1000) -> np.ndarray:
    """``classes`` (an index, a name, or a sequence/array of them, one or ``n``) -> int32 ``[n]``."""
    if isinstance(classes, (str, int, np.integer)) and not isinstance(classes, bool):
        items = [classes]
    elif isinstance(classes, (list, tuple)):
        items = list(classes)
    elif isinstance(classes, (np.ndarray, jax.Array)) and np.ndim(classes) <= 1:
        arr = np.asarray(classes)
        if not np.issubdtype(arr.dtype, np.integer):
            raise ConfigError(f"class indices must be integers, got an array of {arr.dtype}")
        items = [int(v) for v in np.atleast_1d(arr)]
    else:
        raise ConfigError(
            f"classes={classes!r} is not understood; give a class index, an ImageNet class name, "
            "or a list of them (one, or one per sample)"
        )
    if len(items) == 1:
        items = items * n
    if len(items) != n:
        raise ConfigError(f"{len(items)} classes given for {n} samples; give one class or one per sample")
    out = []
    for c in items:
        if isinstance(c, str):
            if num_classes != 1000:
                raise ConfigError(
                    f"class names are ImageNet's 1000 classes but this model has {num_classes} classes; pass indices"
                )
            out.append(class_index(c))
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if not 0 <= int(c) < num_classes:
                raise ConfigError(f"class index {int(c)} is outside 0..{num_classes - 1}")
            out.append(int(c))
        else:
            raise ConfigError(f"class {c!r} is neither an index nor a class name")
    return np.asarray(out, np.int32)
