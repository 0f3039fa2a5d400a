"""Family configs: one frozen dataclass per family, validated once.

A family's constructor settings are a frozen, keyword-only dataclass deriving from
:class:`FamilyConfig` (``StyleGAN2Config``, ``BigGANConfig``, ...; see the family modules). Each
field is declared with :func:`setting` and a *kind* (:class:`Int`, :class:`Float`,
:class:`Flag`, :class:`Choice`, or a family's own) that checks and normalises its value; the
shared ``__post_init__`` runs every field's kind, then the family's cross-field :meth:`~FamilyConfig.check`
(for example "fmaps_base / fmaps_max leave channels at this resolution"). A config that exists
is valid; a bad one raises :class:`~panda_jax.errors.ConfigError` naming the field, the value
and the fix.

Plain dicts come in through :meth:`FamilyConfig.from_dict` or ``Config(**settings)`` (unknown or
missing names are a ``ConfigError``, not a ``TypeError``) and go out through :meth:`FamilyConfig.to_dict`, the
plain-JSON form that ``config.json`` of a converted model stores and ``G.config`` returns.
Configs are hashable, so a generator keeps its config as a static attribute.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Mapping

import numpy as np

from panda_jax.errors import ConfigError


def _show(value) -> str:
    return f"{value!r} ({type(value).__name__})"


class Kind:
    """Checks and normalises one setting: ``kind(where, name, value, example)`` returns the
    normalised value or raises a ConfigError (``example``, the default, goes into the fix)."""

    want = "?"

    def __call__(self, where: str, name: str, value, example=None):
        raise NotImplementedError

    def fail(self, where: str, name: str, value, example=None, fix: str | None = None):
        if fix is None:
            fix = f"give {self.want}" + (f", e.g. {name}={_to_json(example)!r}" if example is not None else "")
        raise ConfigError(f"{where}: {name} = {_show(value)} is not {self.want}; {fix}")


# No size, width or count of a generator comes near this (the released models' largest is 32768,
# StyleGAN's fmaps_base); a larger value is a damaged or hostile config, refused before any array
# of that size (or a Python loop that long) is made.
MAX_INT = 1 << 24
# No generator stacks more layers or blocks than this (the released ones: 18 at most).
MAX_DEPTH = 64


class Int(Kind):
    """A Python or numpy integer (never a bool or a float) in ``lo .. hi`` (``lo`` None: from
    ``-hi``). ``hi`` defaults to :data:`MAX_INT`, far above any real model's setting: a config of
    absurd sizes is refused here, before anything is allocated."""

    def __init__(self, lo: int | None = 1, hi: int = MAX_INT):
        self.lo, self.hi = lo, hi
        low = "an integer" if lo is None else "a positive integer" if lo == 1 else f"an integer >= {lo}"
        self.want = f"{low} up to {hi}" if lo is not None else f"an integer of magnitude up to {hi}"

    def __call__(self, where, name, value, example=None):
        if (
            isinstance(value, (bool, np.bool_))
            or not isinstance(value, (int, np.integer))
            or value > self.hi
            or value < (-self.hi if self.lo is None else self.lo)
        ):
            self.fail(where, name, value, example)
        return int(value)


class Float(Kind):
    """A finite real number (int or float, never a bool); ``positive`` requires ``> 0``;
    ``optional`` also accepts ``None`` (the setting is off)."""

    def __init__(self, positive: bool = False, optional: bool = False):
        self.positive, self.optional = positive, optional
        self.want = ("a finite positive number" if positive else "a finite number") + (" or null (off)" if optional else "")

    def __call__(self, where, name, value, example=None):
        if value is None and self.optional:
            return None
        ok = not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, float, np.integer, np.floating))
        if ok:
            number = float(value)
            ok = math.isfinite(number) and (number > 0 or not self.positive)
        if not ok:
            self.fail(where, name, value, example)
        return number


class Flag(Kind):
    """``True`` or ``False`` (JSON ``true`` / ``false``; not 0/1 or strings)."""

    want = "true or false"

    def __call__(self, where, name, value, example=None):
        if not isinstance(value, (bool, np.bool_)):
            self.fail(where, name, value, fix=f"give {name}=true or {name}=false")
        return bool(value)


class Choice(Kind):
    """One of ``options``, compared with their types (``1`` is not ``True``)."""

    def __init__(self, *options):
        self.options = options
        self.want = "one of " + ", ".join(repr(o) for o in options)

    def __call__(self, where, name, value, example=None):
        for o in self.options:
            same_type = isinstance(value, (bool, np.bool_)) == isinstance(o, bool)
            if same_type and isinstance(value, (bool, np.bool_, int, np.integer, str)) and value == o:
                return o
        self.fail(where, name, value, fix=f"use {self.want}")


def setting(kind: Kind, default=dataclasses.MISSING):
    """A config field checked by ``kind``; without ``default`` the setting is required."""
    return dataclasses.field(default=default, metadata={"kind": kind})


def _to_json(value):
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    return value


class _Checked(type):
    """Constructing a config checks the names first: unknown or missing settings are a
    ConfigError (not the ``TypeError`` of a plain dataclass)."""

    def __call__(cls, *args, **settings):
        if args:
            raise ConfigError(f"{cls.family}: {cls.__name__} takes keyword settings only, got {len(args)} positional")
        fields = dataclasses.fields(cls)
        known = [f.name for f in fields]
        unknown = sorted(str(k) for k in settings if k not in known)
        if unknown:
            raise ConfigError(f"{cls.family}: unknown settings {unknown}; the known settings are {sorted(known)}")
        missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in settings]
        if missing:
            raise ConfigError(f"{cls.family}: missing required settings {missing}; give them, e.g. {missing[0]}=...")
        return super().__call__(**settings)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FamilyConfig(metaclass=_Checked):
    """Base of the family configs (see the module docstring)."""

    family: ClassVar[str] = "?"

    def __post_init__(self):
        for f in dataclasses.fields(self):
            kind = f.metadata.get("kind")
            if kind is not None:
                example = None if f.default is dataclasses.MISSING else f.default
                object.__setattr__(self, f.name, kind(self.family, f.name, getattr(self, f.name), example))
        self.check()

    def check(self) -> None:
        """Cross-field checks, after every field is checked on its own; raise ConfigError."""

    def fail(self, message: str):
        raise ConfigError(f"{self.family}: {message}")

    # ---- dicts in and out ----------------------------------------------------------------
    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """``{name: default}`` of the settings that have one."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}

    @classmethod
    def from_dict(cls, config: Mapping | "FamilyConfig" | None = None, **changes):
        """The config from a plain dict (``config.json``'s ``config``), another config of this
        family, or nothing, updated by keyword ``changes``; every name and value is checked."""
        if isinstance(config, cls):
            config = config.to_dict()
        elif config is None:
            config = {}
        elif not isinstance(config, Mapping):
            raise ConfigError(
                f"{cls.family}: the config must be a {cls.__name__} or a dict of settings, got {type(config).__name__}"
            )
        return cls(**{**{str(k): v for k, v in config.items()}, **changes})

    def to_dict(self) -> dict[str, Any]:
        """The plain-JSON dict (tuples as lists) that :meth:`from_dict` reads back."""
        return {name: _to_json(getattr(self, name)) for name in self.names()}

    def replace(self, **changes):
        """A copy with ``changes`` applied and checked."""
        return type(self).from_dict(self, **changes)
