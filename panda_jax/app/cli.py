"""The ``panda-jax`` command: parser and dispatch (the commands live in :mod:`.commands`).

    panda-jax convert SRC OUT [--arch NAME] [--force]
    panda-jax fit MODEL --layer L --ranks RC RS --out factors.npz [--samples N --steps T ...]
    panda-jax refine FACTORS [MODEL] --seeds S ... --out DIR
    panda-jax edit FACTORS [MODEL] --part K --appearance J [--alpha A ...] --seeds S ... --out DIR
    panda-jax edit [FACTORS] --recipe R.json --seeds 0-63 --out DIR
    panda-jax saliency FACTORS [MODEL] --seeds S ... --out DIR
    panda-jax demo [--out DIR]
    panda-jax serve [MODEL] [--factors F.npz] [--port P] [--host H]

``MODEL`` is a directory written by ``panda-jax convert``, a converted zoo name, a checkpoint
file (converted in memory), or ``default`` (the embedded faces DCGAN). Commands that take
factors default ``MODEL`` to the one the factors were fitted on.

A user error prints one line ``panda-jax: error: ...`` and exits with status 2; outputs are
written to staging siblings and renamed into place, so a failed run leaves no partial file.
Ctrl-C exits with status 130 (a checkpointed fit saves its state first and says how to resume).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from panda_jax.errors import PandaError

from .commands import COMMANDS

PROG = "panda-jax"


class UsageError(Exception):
    """A bad command line (argparse's complaint)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block
        raise UsageError(f"{message} (see: {self.prog} --help)")


def command_module(name: str):
    return importlib.import_module(f"panda_jax.app.commands.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="PandA in JAX: fit parts and appearances to GAN feature maps, then localise and edit. "
                    "Start with `panda-jax demo`.",
        epilog="A MODEL is a directory from `panda-jax convert`, a converted zoo name, a checkpoint file, or "
               "'default' (the embedded faces DCGAN). See `panda-jax COMMAND --help`.",
    )
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="do not reuse compiled programs across runs (also: PANDA_JAX_COMPILE_CACHE=0)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in COMMANDS:
        command_module(name).add_parser(sub)
    return parser


def compile_cache(enabled: bool) -> None:
    """JAX's persistent compilation cache in the user cache folder: a second run in a new
    process reuses the programs the first compiled."""
    if not enabled or os.environ.get("PANDA_JAX_COMPILE_CACHE", "1").lower() in ("0", "off", "no", "false"):
        return
    import jax

    from .pipeline import cache_dir

    jax.config.update("jax_compilation_cache_dir", os.path.join(cache_dir(), "jax-compile"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _one_line(msg: str) -> str:
    return " ".join(str(msg).split())


def main(argv=None) -> int:
    """Entry point of the ``panda-jax`` command; returns the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
        compile_cache(not args.no_compile_cache)
        if hasattr(args, "_argv"):
            args._argv = argv
        return int(args.func(args) or 0)
    except (UsageError, PandaError) as e:
        msg = str(e)
    except FileNotFoundError as e:
        msg = f"{e.filename or ''}: file not found ({e.strerror}); check the path".lstrip(": ")
    except OSError as e:
        msg = f"{e.filename + ': ' if getattr(e, 'filename', None) else ''}{e.strerror or e}; check the path and permissions"
    except MemoryError:
        msg = "out of memory; use fewer samples, a smaller --batch, or fit --stochastic"
    except KeyboardInterrupt as e:
        text = _one_line(str(e)) if str(e) else "interrupted"
        print(f"{PROG}: {text}", file=sys.stderr)
        return 130
    print(f"{PROG}: error: {_one_line(msg)}", file=sys.stderr)
    return 2


def run(argv=None) -> None:
    """The console command: :func:`main`, then exit without the interpreter's teardown.

    Tearing down JAX's and XLA's native state (compiled programs, thread pools) took about
    0.7 s after every command on a 2-core CPU machine, longer than many commands' work. Every
    output is written and closed (renamed into place) before :func:`main` returns, so this
    flushes the standard streams, runs the ``atexit`` handlers (logging, JAX's own) and ends the
    process with ``os._exit``. Python code calling :func:`main` keeps its interpreter."""
    code = main(argv)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream
            pass
    import atexit

    atexit._run_exitfuncs()
    os._exit(code)


if __name__ == "__main__":
    run()
