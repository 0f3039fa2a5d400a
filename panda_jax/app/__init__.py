"""The application layer: the ``panda-jax`` command, its pipeline, figures and reports.

What lives where:

- :mod:`.cli` the parser and dispatch; :mod:`.commands` one module per command;
- :mod:`.args` argument types; :mod:`.pipeline` model loading, batched features and rendering,
  staged outputs (also used by the benchmarks); :mod:`.figures` pictures (PIL, matplotlib);
  :mod:`.report` the demo's HTML page; :mod:`.recipe` edit recipes (saved by the editor, applied
  by ``edit --recipe``); :mod:`.editor` the browser editor behind ``panda-jax serve``.

What may import what: this package is the only code that imports :mod:`ported_gens` and
:mod:`convert` (``panda_jax.app -> convert -> ported_gens -> panda_jax``); the core
(``panda_jax`` outside ``app``) imports none of them, nor flax, torch, PIL or matplotlib.
"""
