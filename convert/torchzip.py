"""Reading ``torch.save`` zip files without torch.

A zip-format ``torch.save`` file is a folder holding ``data.pkl``, a pickle whose tensors are
``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` over storages named by
persistent ids, and one member ``data/<key>`` per storage holding its raw bytes (little-endian
unless a ``byteorder`` member says ``big``). After :func:`convert._safety.check_torch_zip` has
checked the file (structure, CRC-32s, the pickle against the allow-list, every storage against
its member, every view against its storage), :func:`read` unpickles ``data.pkl`` once more with
the same allow-list, building each tensor as a numpy array from its storage's bytes. Nothing
from the file is imported or called, and torch is not needed: a conversion no longer pays for
importing it (about 1.5 s).

What this reader does not cover raises :class:`NeedsTorch`, and the caller falls back to
``torch.load(weights_only=True)``: tensors with metadata (conjugate or negative bits, Python
attributes) and storage types without a numpy equivalent.
"""

from __future__ import annotations

import io
import zipfile
from typing import Any

import numpy as np

from . import _safety
from ._safety import StorageRef, need

# torch's storage classes as numpy dtypes (little-endian); bfloat16 is widened to float32 as
# the torch path does.
DTYPES = {
    "DoubleStorage": "<f8",
    "FloatStorage": "<f4",
    "HalfStorage": "<f2",
    "BFloat16Storage": "<u2",
    "LongStorage": "<i8",
    "IntStorage": "<i4",
    "ShortStorage": "<i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "ComplexFloatStorage": "<c8",
    "ComplexDoubleStorage": "<c16",
}


class NeedsTorch(Exception):
    """The file holds something only ``torch.load`` rebuilds; the message says what."""


def _tensor(storage=None, storage_offset=None, size=None, stride=None, requires_grad=False, backward_hooks=None,
            metadata=None):
    """``torch._utils._rebuild_tensor_v2`` as a numpy array: the view is checked exactly as the
    scan checks it, then copied out of the storage's bytes."""
    ref = _safety._scan_rebuild_tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata)
    if metadata:
        raise NeedsTorch(f"tensor metadata {_safety.short(metadata)}")
    base = storage.array
    itemsize = base.dtype.itemsize
    if ref.numel == 0:
        return np.zeros(size, dtype=base.dtype)
    view = np.ndarray(size, dtype=base.dtype, buffer=base, offset=storage_offset * itemsize,
                      strides=tuple(s * itemsize for s in stride))
    return np.array(view, order="C")


def _tensor_v1(storage=None, storage_offset=None, size=None, stride=None):
    return _tensor(storage, storage_offset, size, stride)


def _parameter(data=None, requires_grad=False, backward_hooks=None, state=None):
    need(isinstance(data, np.ndarray), "parameter without tensor data")
    need(_safety._hooks_empty(backward_hooks), "parameter with backward hooks")
    need(state is None or isinstance(state, dict), "parameter state")
    return data


_ALLOWED = dict(_safety.TorchScan.allowed)
_ALLOWED.update({
    "torch._utils._rebuild_tensor": _tensor_v1,
    "torch._utils._rebuild_tensor_v2": _tensor,
    "torch._utils._rebuild_parameter": _parameter,
    "torch._utils._rebuild_parameter_with_state": _parameter,
})
# The same globals as the scan: a file the scan passed cannot name anything new here.
assert set(_ALLOWED) == set(_safety.TorchScan.allowed)


class _Reader(_safety.TorchScan):
    """:class:`_safety.TorchScan` whose storages carry their bytes (read once per key) and whose
    tensors are numpy arrays."""

    allowed = _ALLOWED

    def __init__(self, file, zf: zipfile.ZipFile, prefix: str, big_endian: bool):
        super().__init__(file, legacy=False)
        self.zf, self.prefix, self.big_endian = zf, prefix, big_endian

    def persistent_load(self, pid):
        ref: StorageRef = super().persistent_load(pid)
        if not hasattr(ref, "array"):
            name = ref.stype.name
            if name not in DTYPES:
                raise NeedsTorch(f"storage type torch.{name}")
            dtype = np.dtype(DTYPES[name])
            if self.big_endian:
                dtype = dtype.newbyteorder(">")
            data = self.zf.read(f"{self.prefix}/data/{ref.key}")  # verifies the CRC-32 again
            need(len(data) == ref.numel * dtype.itemsize, lambda: f"storage {ref.key!r}: member size")
            arr = np.frombuffer(data, dtype=dtype)
            if name == "BFloat16Storage":  # the upper half of a float32
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            elif self.big_endian:
                arr = arr.astype(dtype.newbyteorder("="))
            ref.array = arr
        return ref


def _leaf(o, path):
    if isinstance(o, np.ndarray) or isinstance(o, _safety.SCALARS):
        return o
    raise _safety.Malformed(f"a {type(o).__name__} at {path or 'the top'} where data was expected")


def read(path: str, prefix: str) -> Any:
    """The object a zip-format ``torch.save`` file at ``path`` holds, tensors as numpy arrays
    (bfloat16 as float32), containers as :func:`_safety.plain_tree` makes them. ``path`` must
    have passed :func:`_safety.check_torch_zip`, which returned ``prefix``. Raises
    :class:`NeedsTorch` for what only torch can rebuild, ``_safety.Refused`` or
    ``_safety.Malformed`` as the scan does."""
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        order = f"{prefix}/byteorder"
        big = False
        if order in names:
            text = zf.read(order).decode("ascii", "replace").strip()
            need(text in ("little", "big"), lambda: f"byteorder {text[:20]!r}")
            big = text == "big"
        pkl = zf.read(f"{prefix}/data.pkl")
        obj = _Reader(io.BytesIO(pkl), zf, prefix, big).load()
    return _safety.plain_tree(obj, _leaf)
