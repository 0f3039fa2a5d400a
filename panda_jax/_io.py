"""Atomic file writes: write to a temporary sibling, then rename."""

from __future__ import annotations

import os
import tempfile


def atomic_write(path: str, write) -> str:
    """Call ``write(tmp)`` on a temporary sibling of ``path`` (same extension), then rename it
    to ``path``; on any error the temporary is removed and ``path`` is left untouched."""
    d = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(d, exist_ok=True)
    base, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix="." + base + ".", suffix=".tmp" + ext, dir=d)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 -> the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
