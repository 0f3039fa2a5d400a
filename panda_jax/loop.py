"""The one host loop behind :func:`~panda_jax.fit` and :func:`~panda_jax.fit_stream`.

A fit is a jitted function that runs ``n`` steps per call (``run(state, done, n) -> (state,
losses)``); between calls the host checks the losses (divergence), the stopping rule (``tol``),
shows progress, and saves the state when asked. Both fits therefore behave the same way.

Checkpoints: with ``checkpoint=DIR`` the loop state, the per-step losses and the constants the
steps depend on are saved with orbax every ``checkpoint_every`` steps (atomically: orbax writes
a temporary folder and renames it) and on Ctrl-C. ``resume=True`` restores the latest and runs
the remaining steps with the same compiled program, so a fit killed at any point ends with the
factors of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
import numpy as np

from . import checks
from .errors import ConfigError, ConvergenceWarning, DivergenceError
from .factors import Factors

MARKER = "panda-jax-fit.json"


@dataclass
class FitResult:
    """What :func:`~panda_jax.fit` returns (scikit-learn style attributes)."""

    factors: Factors
    losses: np.ndarray  # summed loss at the start of each step
    n_steps: int
    converged: bool
    seconds: float
    lr: dict = field(default_factory=dict)  # the step sizes in use at the end

    @property
    def reconstruction_err(self) -> float:
        return float(self.losses[-1]) if len(self.losses) else float("nan")


@dataclass
class LoopOutput:
    state: Any
    losses: np.ndarray
    n_steps: int
    converged: bool
    seconds: float


class FitInterrupted(KeyboardInterrupt):
    """Ctrl-C during a checkpointed fit: the state was saved; the message says how to resume."""


# ---- progress ---------------------------------------------------------------------------------


class Progress:
    """A tqdm bar on a terminal; otherwise (nohup, CI logs) one line per chunk on stderr with
    steps, loss, rate and time left."""

    def __init__(self, total: int, desc: str, enabled: bool, start: int = 0, stream=None):
        self.total, self.desc, self.done = total, desc, start
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.start = start
        self.bar = None
        self.enabled = enabled
        if enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=start, desc=desc, unit="step", leave=False, file=self.stream)

    def update(self, n: int, loss: float):
        self.done += n
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(loss=f"{loss:.4g}")
            return
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rate = (self.done - self.start) / dt
        eta = (self.total - self.done) / rate if rate > 0 else float("inf")
        print(f"{self.desc}: step {self.done}/{self.total}, loss {loss:.6g}, {rate:.1f} steps/s, "
              f"ETA {eta:.1f} s", file=self.stream, flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# ---- checkpoints ------------------------------------------------------------------------------


@contextlib.contextmanager
def _sigint_deferred():
    """Hold Ctrl-C until the block ends, then raise it: a save interrupted half-way would leave
    orbax's finalize thread failing (and a traceback on the terminal)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got = []
    old = signal.signal(signal.SIGINT, lambda signum, frame: got.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old if old is not None else signal.default_int_handler)
    if got:
        raise KeyboardInterrupt


class _Store:
    """The fit state in ``directory`` (orbax ``CheckpointManager``, two latest kept)."""

    def __init__(self, directory: str, fingerprint: dict, resume: bool):
        if jax.process_count() > 1:
            raise ConfigError("checkpointed fits run in one process; drop checkpoint= for multi-host fits")
        self.dir = os.path.abspath(directory)
        marker = os.path.join(self.dir, MARKER)
        if os.path.exists(self.dir) and not os.path.isdir(self.dir):
            raise ConfigError(f"checkpoint {directory!r} exists and is not a directory; give a directory path")
        if os.path.isdir(self.dir) and os.listdir(self.dir) and not os.path.isfile(marker):
            raise ConfigError(
                f"checkpoint directory {directory!r} holds other files; give a new directory for the fit state"
            )
        self.fingerprint = json.loads(json.dumps(fingerprint))
        self.saved_step = None  # the last step this process saved
        os.makedirs(self.dir, exist_ok=True)
        import orbax.checkpoint as ocp

        self.ocp = ocp
        self.mngr = ocp.CheckpointManager(self.dir, options=ocp.CheckpointManagerOptions(max_to_keep=2, create=True))
        latest = self.mngr.latest_step()
        if latest is not None and not resume:
            raise ConfigError(
                f"checkpoint directory {directory!r} holds the state of an earlier fit (step {latest}); "
                "pass resume=True (panda-jax fit --resume) to continue it, or give a new directory"
            )
        if not os.path.isfile(marker):
            with open(marker + ".tmp", "w") as f:
                json.dump({"format": "panda-jax fit state", "version": 1, "fingerprint": self.fingerprint}, f)
            os.replace(marker + ".tmp", marker)

    def save(self, step: int, state, constants, losses, converged: bool):
        leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves((state, constants))]
        tree = {"leaves": {str(i): a for i, a in enumerate(leaves)}, "losses": np.asarray(losses, np.float64)}
        meta = {"step": step, "converged": converged, "fingerprint": self.fingerprint}
        args = self.ocp.args
        with _sigint_deferred():
            self.mngr.save(step, args=args.Composite(state=args.StandardSave(tree), meta=args.JsonSave(meta)),
                           force=True)
            self.mngr.wait_until_finished()
            self.saved_step = step

    def restore(self, state, constants):
        """``(state, constants, losses, step, converged)`` from the latest save, or None."""
        step = self.mngr.latest_step()
        if step is None:
            return None
        args = self.ocp.args
        meta = self.mngr.restore(step, args=args.Composite(meta=args.JsonRestore())).meta
        if meta.get("fingerprint") != self.fingerprint:
            raise ConfigError(
                f"the fit state in {self.dir!r} is of another fit ({meta.get('fingerprint')}) than this one "
                f"({self.fingerprint}); give the same data, ranks and lr, or a new checkpoint directory"
            )
        like, treedef = jax.tree_util.tree_flatten((state, constants))
        target = {"leaves": {str(i): np.zeros(np.shape(a), np.asarray(a).dtype) for i, a in enumerate(like)},
                  "losses": np.zeros((step,), np.float64)}
        got = self.mngr.restore(step, args=args.Composite(state=args.StandardRestore(target))).state
        leaves = [_put_like(got["leaves"][str(i)], a) for i, a in enumerate(like)]
        state, constants = jax.tree_util.tree_unflatten(treedef, leaves)
        return state, constants, np.asarray(got["losses"]), int(step), bool(meta.get("converged", False))


def _put_like(value, like):
    sharding = getattr(like, "sharding", None)
    if isinstance(like, jax.Array) and sharding is not None:
        return jax.device_put(np.asarray(value, like.dtype), sharding)
    return np.asarray(value)


def to_host(x) -> np.ndarray:
    """``x`` as a NumPy array on this host, also when it spans devices of other processes (a fit
    after ``jax.distributed.initialize()``): a replicated array is read from a local copy, a
    sharded one is gathered from all processes (every process must call this together)."""
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
        return np.asarray(x)
    if x.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _alive(state) -> bool:
    return not any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree_util.tree_leaves(state))


# ---- the loop ---------------------------------------------------------------------------------


def run_loop(
    run: Callable,
    state,
    *,
    steps: int,
    chunk: int,
    tol: float,
    progress: bool,
    desc: str,
    lr_desc: str,
    constants: dict | None = None,
    checkpoint: str | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    fingerprint: Callable[[], dict] | None = None,
    stochastic: bool = False,
) -> LoopOutput:
    """Run ``run(state, done, n, constants) -> (state, losses[chunk])`` until ``steps`` are done or the loss
    settles (``tol``: relative decrease between successive chunks, compared on the last loss, or
    on the chunk mean when ``stochastic``). ``constants`` are arrays the steps depend on that are
    fixed at the start (step-size caps): they are saved with the state and restored with it."""
    constants = dict(constants or {})
    store = None
    if checkpoint_every is not None:
        checkpoint_every = checks.integer(checkpoint_every, "checkpoint_every")
        if checkpoint is None:
            raise ConfigError("checkpoint_every needs checkpoint=DIR (where the fit state is kept)")
    if resume and checkpoint is None:
        raise ConfigError("resume=True needs checkpoint=DIR (where the fit state was kept)")
    losses: list[np.ndarray] = []
    done, converged = 0, False
    if checkpoint is not None:
        store = _Store(checkpoint, fingerprint() if fingerprint else {}, resume)
        restored = store.restore(state, constants) if resume else None
        if restored is not None:
            state, constants, past, done, converged = restored
            losses.append(past)
        elif resume:
            warnings.warn(f"no saved fit state in {checkpoint!r}; starting from step 0", stacklevel=3)
    chunk = min(chunk, steps)
    t0 = time.perf_counter()
    # With several processes every one runs this loop on the same (replicated) losses; one reports.
    bar = Progress(steps, desc, progress and jax.process_index() == 0, start=min(done, steps))
    last_saved = done
    prev = _summary(losses[-1], stochastic) if losses and len(losses[-1]) else None
    rel = None
    try:
        while done < steps and not converged:
            n = min(chunk, steps - done)
            if checkpoint_every:
                n = min(n, checkpoint_every - done % checkpoint_every)
            state, ls = run(state, done, n, constants)
            ls = to_host(ls)[:n]
            if not np.all(np.isfinite(ls)) or not _finite(state):
                bad = np.flatnonzero(~np.isfinite(ls))
                step = done + (int(bad[0]) if len(bad) else n - 1)
                raise DivergenceError(
                    f"the loss became non-finite at step {step} with step size {lr_desc}; "
                    "use lr='auto' or a smaller lr"
                )
            losses.append(ls)
            done += n
            bar.update(n, float(ls[-1]))
            cur = _summary(ls, stochastic)
            if tol > 0 and prev is not None:
                rel = (prev - cur) / max(abs(prev), 1e-300)
                converged = rel <= tol
            prev = cur
            if store is not None and (converged or done == steps or (checkpoint_every and done % checkpoint_every == 0)):
                store.save(done, state, constants, np.concatenate(losses), converged)
                last_saved = done
    except KeyboardInterrupt:
        if store is None:
            raise
        if store.saved_step is not None:  # a save that Ctrl-C waited for counts
            last_saved = max(last_saved, store.saved_step)
        where = last_saved
        if done > last_saved and _alive(state):
            jax.block_until_ready(state)
            store.save(done, state, constants, np.concatenate(losses), converged)
            where = done
        raise FitInterrupted(
            f"interrupted; the fit state at step {where} is saved in {store.dir}: run the same call with "
            "resume=True (panda-jax fit ... --resume) to continue"
        ) from None
    finally:
        bar.close()
    if tol > 0 and not converged:
        more = f" (relative decrease over the last chunk {rel:.3g} > tol {tol:g})" if rel is not None else ""
        warnings.warn(
            f"the fit stopped after {done} steps before the loss settled{more}; raise steps or tol",
            ConvergenceWarning, stacklevel=3,
        )
    return LoopOutput(state, np.concatenate(losses) if losses else np.zeros(0), done, converged,
                      time.perf_counter() - t0)


def _summary(ls: np.ndarray, stochastic: bool) -> float:
    return float(np.mean(ls)) if stochastic else float(ls[-1])


def _finite(state) -> bool:
    A = getattr(state, "A", None)
    return A is None or bool(np.isfinite(to_host(A)).all())


__all__ = ["FitInterrupted", "FitResult", "LoopOutput", "Progress", "run_loop", "to_host", "MARKER"]
