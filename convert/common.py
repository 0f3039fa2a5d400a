"""Shape-driven filling of a Flax generator from a converted key map, with loud errors.

A family converter turns the source tensors into ``{flax_path: array}`` (paths like
``"blocks/0/conv/weight"``, as :func:`flax_shapes` lists them) and says which source keys it
used and which it deliberately ignores. :func:`fill` then checks, against the generator's
abstract parameter tree, that every Flax parameter is filled with the right shape, that no
unknown path is given, and that every source key is accounted for; any mismatch is listed in
one :class:`~panda_jax.errors.CheckpointError` with the likely cause.

:func:`build` is what every converter's ``to_generator`` ends with: state dict, family, config
and rule table in, the checked and filled generator out (shapes are checked before any tensor
is transformed). :func:`arch_config` and :func:`infer_fmaps` are the config helpers the
families share.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from panda_jax.errors import CheckpointError, ConfigError
from ported_gens.base import Generator, abstract

from .transforms import Rule, apply_rules, shape_of

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


def build(
    sd: Mapping[str, np.ndarray],
    family: str,
    config: dict,
    rules: Sequence[Rule],
    ignored: Sequence[str] = (),
    *,
    what: str,
    hint: str = "",
    model: Generator | None = None,
    name_mismatched_keys: bool = False,
) -> Generator:
    """The ``family`` generator of ``config`` filled from the state dict ``sd`` by ``rules``.

    The key map is first checked on bare shapes (no tensor is transformed until every
    parameter is known to fit), then applied to the arrays. ``model`` is the abstract model if
    the caller has built it already; with ``name_mismatched_keys`` the hint also names the
    source keys whose converted shape differs from the model's.
    """
    model = abstract(family, config) if model is None else model
    shapes = {k: shape_of(v) for k, v in sd.items()}
    params, used, present = apply_rules(rules, ignored, shapes)
    if name_mismatched_keys:
        want = flax_shapes(model)
        wrong = [r.keys[0] for r in rules if r.path in params and r.path in want and params[r.path] != want[r.path]]
        if wrong:
            more = f" (+{len(wrong) - 8} more)" if len(wrong) > 8 else ""
            hint += f"; checkpoint keys of another shape: {', '.join(wrong[:8])}{more}"
    checks = dict(source_keys=list(sd), what=what, hint=hint)
    check_keymap(model, params, used=used, ignored=present, **checks)
    params, used, present = apply_rules(rules, ignored, sd)
    return fill(model, params, used=used, ignored=present, **checks)


def kwargs_group(value, name: str, where: str) -> dict:
    """A nested group of stored constructor arguments (``mapping_kwargs``, ...): ``None`` or a
    mapping with text keys, as a plain dict; anything else is a CheckpointError."""
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise CheckpointError(
            f"{where}: {name} is a {type(value).__name__}, not an object of constructor arguments; "
            "the stored arguments are damaged: fix or remove them"
        )
    return dict(value)


def checked_config(family: str, config: Mapping, where: str) -> dict:
    """``config`` checked by the family's config class (names, types, ranges) and returned in
    its plain form; a bad value is a CheckpointError naming ``where`` the settings came from."""
    from ported_gens.base import FAMILIES

    try:
        return FAMILIES[family].Config.from_dict(config).to_dict()
    except ConfigError as e:
        raise CheckpointError(f"{where}: {e}; the stored settings are damaged: fix or remove them") from None


def arch_config(arch: str) -> tuple[str, dict]:
    """``(family, config overrides)`` of ``--arch``: a family name or a :mod:`ported_gens.zoo` name."""
    from ported_gens import zoo

    return zoo.family_of(arch), zoo.config_of(arch)


def infer_fmaps(family: str, nf: dict[int, int], default_base: int) -> tuple[int, int]:
    """``(fmaps_base, fmaps_max)`` reproducing ``nf[res] = min(fmaps_base // res, fmaps_max)``
    (genforce's and NVlabs' channel rule); ``default_base`` when every width is at the cap."""
    fmax = nf[min(nf)]
    base = None
    for res in sorted(nf):
        if nf[res] < fmax:
            base = nf[res] * res
            break
    if base is None:  # no resolution below the cap: any large base fits; prefer the family's default
        base = default_base
        if any(min(base // r, fmax) != c for r, c in nf.items()):
            base = fmax * max(nf)
    if any(min(base // r, fmax) != c for r, c in nf.items()):
        raise CheckpointError(
            f"the {family} checkpoint's channel counts {dict(sorted(nf.items()))} (resolution: channels) do not "
            "follow genforce's min(fmaps_base // res, fmaps_max); this is not a standard genforce network"
        )
    return int(base), int(fmax)
