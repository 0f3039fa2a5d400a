"""Shape-driven filling of a Flax generator from a converted key map, with loud errors.

A family converter turns the source tensors into ``{flax_path: array}`` (paths like
``"blocks/0/conv/weight"``, as :func:`flax_shapes` lists them) and says which source keys it
used and which it deliberately ignores. :func:`fill` then checks, against the generator's
abstract parameter tree, that every Flax parameter is filled with the right shape, that no
unknown path is given, and that every source key is accounted for; any mismatch is listed in
one :class:`~panda_jax.errors.CheckpointError` with the likely cause.
"""

from __future__ import annotations

from typing import Iterable, Mapping

import jax
import numpy as np
from flax import nnx

from panda_jax.errors import CheckpointError
from ported_gens.base import Generator

MAX_LISTED = 12


def _path_str(path) -> str:
    return "/".join(str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p)))) for p in path)


def flax_shapes(model: Generator) -> dict[str, tuple[int, ...]]:
    """``{path: shape}`` of every parameter and buffer of ``model`` (concrete or abstract)."""
    state = nnx.to_pure_dict(nnx.state(model))
    flat = jax.tree_util.tree_flatten_with_path(state)[0]
    return {_path_str(p): tuple(np.shape(v)) for p, v in flat}


def _listing(title: str, items: list[str]) -> str:
    more = f" (+{len(items) - MAX_LISTED} more)" if len(items) > MAX_LISTED else ""
    return f"{title}: " + ", ".join(items[:MAX_LISTED]) + more


def check_keymap(
    model: Generator,
    params: Mapping[str, np.ndarray | tuple],
    *,
    source_keys: Iterable[str] = (),
    used: Iterable[str] = (),
    ignored: Iterable[str] = (),
    what: str = "checkpoint",
    hint: str = "",
) -> None:
    """Raise :class:`CheckpointError` unless ``params`` fills ``model`` exactly.

    ``params`` values may be arrays or bare shapes (to check a key map without weights).
    """
    want = flax_shapes(model)
    got = {k: tuple(v) if isinstance(v, tuple) else tuple(np.shape(v)) for k, v in params.items()}
    missing = sorted(set(want) - set(got))
    unknown = sorted(set(got) - set(want))
    bad = sorted(
        f"{k} (checkpoint {got[k]}, model {want[k]})" for k in set(want) & set(got) if got[k] != want[k]
    )
    unused = sorted(set(source_keys) - set(used) - set(ignored))
    problems = []
    if bad:
        problems.append(_listing("shape mismatches", bad))
    if missing:
        problems.append(_listing("model parameters not filled", missing))
    if unknown:
        problems.append(_listing("converted names the model does not have", unknown))
    if unused:
        problems.append(_listing("checkpoint tensors not used", unused))
    if problems:
        cause = f" Likely cause: {hint}." if hint else ""
        raise CheckpointError(
            f"the {what} does not match the {model.family} generator it was taken for: "
            + "; ".join(problems)
            + "."
            + cause
            + " Fix: check the resolution/channel settings or pass --arch with the right model name."
        )


def fill(model: Generator, params: Mapping[str, np.ndarray], **check_kwargs) -> Generator:
    """``model`` (abstract or concrete) with every parameter replaced from ``params``.

    Runs :func:`check_keymap` first; dtypes follow the model's (float32 weights stay float32).
    """
    check_keymap(model, params, **check_kwargs)
    graphdef, state = nnx.split(model)
    pure = nnx.to_pure_dict(state)
    flat, treedef = jax.tree_util.tree_flatten_with_path(pure)
    leaves = []
    for path, leaf in flat:
        arr = np.asarray(params[_path_str(path)])
        leaves.append(jax.numpy.asarray(arr, dtype=leaf.dtype))
    nnx.replace_by_pure_dict(state, jax.tree_util.tree_unflatten(treedef, leaves))
    return nnx.merge(graphdef, state)
