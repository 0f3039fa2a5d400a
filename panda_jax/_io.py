"""Safe writes: atomic files, staged directories, and stale staging clean-up.

Every output is written to a temporary sibling first and renamed into place, so a failed or
killed run never leaves a half-written file where the user looks. Staging names carry the
writer's process id (``.panda-jax-tmp-<pid>-<random>``), so a later run into the same folder can
remove those whose process is gone (a run killed with SIGKILL cannot clean up after itself).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import tempfile

STAGING_PREFIX = ".panda-jax-tmp-"
_STAGING = re.compile(r"^\.panda-jax-tmp-(\d+)-")


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM  # exists, owned by someone else
    return True


def clean_stale(parent: str) -> list[str]:
    """Remove staging entries in ``parent`` whose writing process no longer runs; returns them."""
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return removed
    for name in names:
        m = _STAGING.match(name)
        if not m or _alive(int(m.group(1))):
            continue
        path = os.path.join(parent, name)
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path)
            else:
                os.remove(path)
            removed.append(path)
        except OSError:
            pass
    return removed


def _prefix(base: str) -> str:
    return f"{STAGING_PREFIX}{os.getpid()}-{base}."


def staging_dir(target: str) -> str:
    """A new, empty staging directory beside ``target`` (stale ones there are removed first)."""
    parent = os.path.dirname(os.path.abspath(target)) or "."
    os.makedirs(parent, exist_ok=True)
    clean_stale(parent)
    return tempfile.mkdtemp(prefix=_prefix(os.path.basename(os.path.abspath(target))), dir=parent)


def default_permissions(root: str) -> None:
    """Give what was written under ``root`` the usual modes (temporary entries are private)."""
    umask = _umask()
    os.chmod(root, 0o777 & ~umask)
    for d, dirs, files in os.walk(root):
        for name in dirs:
            os.chmod(os.path.join(d, name), 0o777 & ~umask)
        for name in files:
            os.chmod(os.path.join(d, name), 0o666 & ~umask)


def replace_dir(tmp: str, target: str) -> None:
    """Move the staged directory ``tmp`` to ``target``, replacing a directory there.

    ``target`` must not be a symbolic link (resolve it first: :func:`real_target`). The old
    directory is moved aside under a staging name, then removed.
    """
    default_permissions(tmp)
    if os.path.lexists(target):
        parent = os.path.dirname(os.path.abspath(target))
        old = tempfile.mkdtemp(prefix=_prefix(os.path.basename(target) + "-old"), dir=parent)
        os.rmdir(old)
        os.rename(target, old)
        os.rename(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, target)


def real_target(path: str) -> str:
    """``path`` with symbolic links resolved, so that writing through a linked output replaces
    what the link points to and leaves the link itself in place."""
    return os.path.realpath(os.path.abspath(path))


def atomic_write(path: str, write) -> str:
    """Call ``write(tmp)`` on a temporary sibling of ``path`` (same extension), then rename it
    to ``path``; on any error the temporary is removed and ``path`` is left untouched."""
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=_prefix(base), suffix=".tmp" + ext, dir=d)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 -> the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def is_within(path: str, root: str) -> bool:
    """Is ``path`` equal to ``root`` or inside it (after resolving links)?"""
    p, r = os.path.realpath(path), os.path.realpath(root)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)
