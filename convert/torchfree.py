"""Reading ``torch.save`` files without torch.

Two formats, both already checked by :mod:`convert._safety` when they get here:

- **zip** (torch's default since 1.6): a folder holding ``data.pkl``, a pickle whose tensors are
  ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` over storages named by
  persistent ids, and one member ``data/<key>`` per storage holding its raw bytes
  (little-endian unless a ``byteorder`` member says ``big``). :func:`read_zip` needs what
  :func:`_safety.check_torch_zip` verified: structure, CRC-32s, the pickle against the
  allow-list, every storage against its member, every view against its storage.
- **legacy** (older files, and the storages NVlabs pickles embed): header pickles, the main
  pickle, a pickled list of storage keys, then each storage as an 8-byte element count and its
  bytes, in the byte order the header's ``little_endian`` flag gives.
  :func:`read_legacy` needs what :func:`_safety.check_legacy_torch` verified (and the data
  offsets it records).

Each is unpickled once more with the same allow-list as the scan, building each tensor as a
numpy array from its storage's bytes. Nothing from the file is imported or called, and torch
is not needed: a conversion no longer pays for importing it (about 1.5 s).

What these readers do not cover raises :class:`NeedsTorch`, and the caller falls back to
``torch.load(weights_only=True)``: tensors with metadata (conjugate or negative bits) and
storage types without a numpy equivalent.
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


class Storage:
    """A storage's elements as a flat numpy array (bfloat16 widened to float32)."""

    def __init__(self, array: np.ndarray, name: str):
        self.array, self.name = array, name

    @property
    def numel(self) -> int:
        return int(self.array.size)


def read_into(stream, buf: memoryview) -> None:
    """Fill ``buf`` from ``stream`` (a short read is a damaged file)."""
    done = 0
    while done < len(buf):
        got = stream.readinto(buf[done:])
        need(bool(got), lambda: f"storage data ends after {done} of {len(buf)} bytes")
        done += got


def storage_array(fill, name: str, numel: int, big_endian: bool = False) -> np.ndarray:
    """``numel`` elements of torch storage type ``name``, in native order, as a writable array
    that ``fill(buffer)`` reads the storage's bytes into (no intermediate copy)."""
    if name not in DTYPES:
        raise NeedsTorch(f"storage type torch.{name}")
    dtype = np.dtype(DTYPES[name])
    if big_endian:
        dtype = dtype.newbyteorder(">")
    arr = np.empty(numel, dtype=dtype)
    fill(memoryview(arr).cast("B"))
    if name == "BFloat16Storage":  # the upper half of a float32
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(dtype.newbyteorder("=")) if big_endian else arr


def view(base: np.ndarray, storage_offset, size, stride) -> np.ndarray:
    """The tensor view ``(offset, size, stride)`` of the flat ``base``: the storage itself,
    reshaped, where the tensor is all of it in C order (no copy; tensors sharing that storage
    share the array, as torch's would), else a new C-ordered array. The view must already be
    checked against the storage (:func:`_safety.check_view`)."""
    size = tuple(size)
    numel = int(np.prod(size, dtype=np.int64))
    if numel == 0:
        return np.zeros(size, dtype=base.dtype)
    if storage_offset == 0 and numel == base.size and all(
            st == int(np.prod(size[i + 1:], dtype=np.int64)) for i, st in enumerate(stride) if size[i] > 1):
        return base.reshape(size)
    itemsize = base.dtype.itemsize
    v = np.ndarray(size, dtype=base.dtype, buffer=base, offset=storage_offset * itemsize,
                   strides=tuple(s * itemsize for s in stride))
    return np.array(v, order="C")


def _tensor(storage=None, storage_offset=None, size=None, stride=None, requires_grad=False, backward_hooks=None,
            metadata=None):
    """``torch._utils._rebuild_tensor_v2`` as a numpy array: the view is checked exactly as the
    scan checks it, then copied out of the storage's bytes."""
    _safety._scan_rebuild_tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata)
    if metadata:
        raise NeedsTorch(f"tensor metadata {_safety.short(metadata)}")
    return view(storage.array, storage_offset, size, stride)


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
    """:class:`_safety.TorchScan` whose storages carry their elements (``fill(ref, buffer)``
    reads a storage's bytes, once per key) and whose tensors are numpy arrays."""

    allowed = _ALLOWED

    def __init__(self, file, legacy: bool, fill, big_endian: bool):
        super().__init__(file, legacy=legacy)
        self.fill, self.big_endian = fill, big_endian

    def _with_array(self, ref: StorageRef) -> StorageRef:
        if not hasattr(ref, "array"):
            ref.array = storage_array(lambda buf: self.fill(ref, buf), ref.stype.name, ref.numel, self.big_endian)
        return ref

    def persistent_load(self, pid):
        ref: StorageRef = super().persistent_load(pid)
        if not self.legacy or pid[5] is None:
            return self._with_array(ref)
        # A legacy view of part of a storage: the scan checked it lies inside.
        if not hasattr(ref, "array"):
            base = self._with_array(self.storages[_safety._text(pid[2])])
            offset, count = pid[5][1], pid[5][2]
            ref.array = base.array[offset:offset + count]
        return ref


def _leaf(o, path):
    if isinstance(o, np.ndarray) or isinstance(o, _safety.SCALARS):
        return o
    raise _safety.Malformed(f"a {type(o).__name__} at {path or 'the top'} where data was expected")


def read_zip(path: str, prefix: str) -> Any:
    """The object a zip-format ``torch.save`` file at ``path`` holds, tensors as numpy arrays
    (bfloat16 as float32), containers as :func:`_safety.plain_tree` makes them. ``path`` must
    have passed :func:`_safety.check_torch_zip`, which returned ``prefix`` (its CRC-32s of the
    storages may be left to this reader: a damaged storage is refused as it is read). Raises
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

        def fill(ref, buf):  # zipfile checks the CRC-32 on reaching the member's end
            name = f"{prefix}/data/{ref.key}"
            try:
                with zf.open(name) as m:
                    read_into(m, buf)
            except zipfile.BadZipFile as e:
                raise _safety.damaged_member(name, e) from None

        obj = _Reader(io.BytesIO(pkl), False, fill, big).load()
    return _safety.plain_tree(obj, _leaf)


def read_legacy(f, end: int) -> Any:
    """What a legacy ``torch.save`` stream ``f`` (from offset 0, ``end`` bytes long) holds, as
    :func:`read_zip` gives it; a lone storage (``torch.save(storage)``, as NVlabs pickles embed
    them; then it must be the only one declared) comes back as a :class:`Storage`. The stream
    is checked first by :func:`_safety.check_legacy_torch`, whose layout says where the main
    pickle and each storage's bytes lie and in which byte order."""
    f.seek(0)
    layout = _safety.check_legacy_torch(f, end)
    f.seek(layout.main_pickle)

    def fill(ref, buf):  # the pickle is read on from where it was
        pos = f.tell()
        f.seek(layout.storages[ref.key].data_offset)
        read_into(f, buf)
        f.seek(pos)

    reader = _Reader(_safety.BoundedFile(f, end), True, fill, not layout.little_endian)
    obj = reader.load()
    if isinstance(obj, StorageRef):
        need(len(layout.storages) == 1, "a lone storage, but not exactly one storage declared")
        return Storage(reader._with_array(obj).array, obj.stype.name)
    return _safety.plain_tree(obj, _leaf)
