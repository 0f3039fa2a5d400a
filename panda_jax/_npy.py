"""Array files checked before ``np.load`` allocates anything: the declared shape and dtype of
every array in a ``.npy`` file or ``.npz`` archive must fit in the bytes that hold it.

``np.load`` allocates the array its header declares before reading the data, so a damaged or
hostile header (``'shape': (1000000000,)`` over a few bytes) asks for gigabytes. The readers of
factor and direction files call :func:`check_sizes` first; it reads only the headers.
"""

from __future__ import annotations

import math
import os
import zipfile

import numpy as np

_MAGIC = b"\x93NUMPY"


def _check_one(f, size: int, name: str) -> None:
    fmt = np.lib.format
    major, minor = fmt.read_magic(f)
    if (major, minor) == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(f)
    elif major in (2, 3) and minor == 0:
        shape, _, dtype = fmt.read_array_header_2_0(f)
    else:
        raise ValueError(f"{name}: .npy format version {major}.{minor} is not one numpy writes")
    if dtype.hasobject:
        return  # refused by np.load(allow_pickle=False), with its own message
    if any(d < 0 for d in shape):
        raise ValueError(f"{name}: the header declares the negative shape {shape}")
    want = math.prod(shape) * dtype.itemsize
    have = size - f.tell()
    if want > have:
        raise ValueError(
            f"{name}: the header declares shape {shape} of {dtype} ({want} bytes) but only {max(have, 0)} bytes "
            "follow; the file is damaged or truncated"
        )


def check_sizes(path: str) -> None:
    """Raise ValueError (naming the member) unless every array in the ``.npy`` or ``.npz`` file
    ``path`` declares no more data than it holds. Other files pass (``np.load`` refuses them).
    Whatever numpy's header parser, zipfile or tokenize raise on a damaged header is a
    ValueError here too."""
    try:
        _check_sizes(path)
    except ValueError:
        raise
    except Exception as e:  # noqa: BLE001 - tokenize.TokenError, OverflowError, NotImplementedError, BadZipFile, ...
        raise ValueError(f"unreadable array header ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})") from None


def _check_sizes(path: str) -> None:
    with open(path, "rb") as f:
        head = f.read(len(_MAGIC))
        if head == _MAGIC:
            f.seek(0)
            _check_one(f, os.fstat(f.fileno()).st_size, os.path.basename(path))
            return
    if head[:2] != b"PK":
        return
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            with z.open(info) as m:
                if m.read(len(_MAGIC)) != _MAGIC:
                    continue
            with z.open(info) as m:
                _check_one(m, info.file_size, info.filename)
