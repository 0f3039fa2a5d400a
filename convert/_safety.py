"""Checks that run before a checkpoint's bytes reach a loader, and on what the loaders return.

A checkpoint is untrusted input. Before ``torch.load`` sees a file (or an NVlabs pickle's
embedded storage), the file is checked here, with nothing allocated from sizes it declares:

- zip files (``torch.save``'s default format): one top-level folder holding ``data.pkl``,
  members stored uncompressed, unique, no larger together than the file, every CRC-32 verified
  (:func:`check_torch_zip`);
- the pickle inside (``data.pkl``, or the main pickle of a legacy file) is read by
  :class:`TorchScan`, an allow-listed unpickler that rebuilds no tensor: it records each storage
  the pickle declares and checks each tensor view against its storage (bounds, and no more
  elements than the storage holds, so a stride-0 view cannot blow a few bytes up into
  gigabytes);
- the declared storages must match what the file holds: zip members of exactly the declared
  size, or in a legacy file the length headers and bytes that follow the pickles
  (:func:`check_legacy_torch`);
- what the loaders return is converted to plain data by :func:`plain_tree`: nesting depth is
  capped (so deeply nested or self-referencing pickles are refused, not a ``RecursionError``),
  shared sub-objects are converted once (so a pickle whose lists refer to each other cannot
  make the walk exponential);
- :func:`check_finite` names the first tensor holding NaN/inf.

Failures raise :class:`Refused` (a global outside the allow-list) or :class:`Malformed` (what
is wrong); the readers turn both into :class:`~panda_jax.errors.CheckpointError`.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import zipfile
from typing import Any, Callable, NamedTuple

import numpy as np

# Nesting deeper than this is not a checkpoint (a state dict nests 1-3 levels, an NVlabs
# network's attributes a few more).
MAX_DEPTH = 100
# No tensor dimension is larger than this (also keeps products of sizes far from overflow).
MAX_DIM = 1 << 40
# torch.save's legacy (non-zip) format starts with this number, pickled.
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
LEGACY_PROTOCOL = 1001

# torch's legacy storage classes (the type a pickle names for each storage) and item sizes.
STORAGE_ITEMSIZE = {
    "DoubleStorage": 8,
    "FloatStorage": 4,
    "HalfStorage": 2,
    "BFloat16Storage": 2,
    "LongStorage": 8,
    "IntStorage": 4,
    "ShortStorage": 2,
    "CharStorage": 1,
    "ByteStorage": 1,
    "BoolStorage": 1,
    "ComplexFloatStorage": 8,
    "ComplexDoubleStorage": 16,
}


class Refused(Exception):
    """A global outside the allow-list: ``name`` is ``module.qualname``."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class Malformed(Exception):
    """The file is not what it claims to be; the message says what is wrong."""


def need(cond: bool, what: str | Callable[[], str]) -> None:
    """Raise :class:`Malformed` unless ``cond``; ``what`` may be a callable (built only on failure)."""
    if not cond:
        raise Malformed(what() if callable(what) else what)


def short(x: Any, limit: int = 60) -> str:
    """``repr(x)`` cut to ``limit`` characters, never failing (huge ints, deep nesting)."""
    try:
        s = repr(x)
    except Exception:  # RecursionError, ValueError (int too long to print), ...
        s = f"<{type(x).__name__}>"
    return s if len(s) <= limit else s[: limit - 3] + "..."


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# ---- tensor views ---------------------------------------------------------------------------


def check_view(storage_numel: int, offset: Any, size: Any, stride: Any, where: str = "tensor") -> int:
    """Check a tensor view ``(offset, size, stride)`` of a storage of ``storage_numel`` elements
    and return its element count. Refused: non-integer or negative values, a view reaching
    outside the storage, and a view with more elements than its storage (overlapping strides,
    e.g. stride 0: materialising it would take more memory than the file provides)."""
    need(is_int(offset) and 0 <= offset <= MAX_DIM, lambda: f"{where}: storage offset {short(offset)}")
    need(isinstance(size, tuple) and len(size) <= 64, lambda: f"{where}: size {short(size)}")
    need(all(is_int(s) and 0 <= s <= MAX_DIM for s in size), lambda: f"{where}: size {short(size)}")
    need(isinstance(stride, tuple) and len(stride) == len(size), lambda: f"{where}: stride {short(stride)} for size {short(size)}")
    need(all(is_int(s) and 0 <= s <= MAX_DIM for s in stride), lambda: f"{where}: stride {short(stride)}")
    numel = 1
    for s in size:
        numel *= s
    if numel == 0:
        return 0
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    need(last < storage_numel, lambda: (
        f"{where}: tensor view outside its storage (size {list(size)}, stride {list(stride)}, offset {offset} "
        f"reach element {last}; the storage has {storage_numel})"))
    need(numel <= storage_numel, lambda: (
        f"{where}: tensor view with more elements ({numel}) than its storage ({storage_numel}): size {list(size)}, "
        f"stride {list(stride)} overlap; a checkpoint stores each tensor's own data (save tensors .contiguous())"))
    return numel


# ---- the pickle inside a torch file ---------------------------------------------------------


class StorageType:
    """A torch storage class named by a pickle (``torch.FloatStorage``, ...): only its item size."""

    def __init__(self, name: str):
        self.name, self.itemsize = name, STORAGE_ITEMSIZE[name]

    def __call__(self, *args, **kwargs):
        raise Malformed(f"a call of torch.{self.name}")


class StorageRef:
    """A storage a torch pickle declares: its key, element size and element count."""

    def __init__(self, key: str, stype: StorageType, numel: int):
        self.key, self.stype, self.numel = key, stype, numel


class TensorRef:
    """A tensor view a torch pickle rebuilds (checked against its storage, never materialised)."""

    def __init__(self, storage: StorageRef, numel: int):
        self.storage, self.numel = storage, numel


def _hooks_empty(hooks) -> bool:
    return hooks is None or (isinstance(hooks, dict) and not hooks)


def _scan_rebuild_tensor(storage=None, storage_offset=None, size=None, stride=None, requires_grad=False,
                         backward_hooks=None, metadata=None):
    need(isinstance(storage, StorageRef), "tensor without a storage")
    need(isinstance(requires_grad, bool), "tensor requires_grad flag")
    need(_hooks_empty(backward_hooks), "tensor with backward hooks")
    need(metadata is None or isinstance(metadata, dict), "tensor metadata")
    numel = check_view(storage.numel, storage_offset, size, stride, f"storage {storage.key!r}")
    return TensorRef(storage, numel)


def _scan_rebuild_tensor_v1(storage=None, storage_offset=None, size=None, stride=None):
    return _scan_rebuild_tensor(storage, storage_offset, size, stride)


def _scan_rebuild_parameter(data=None, requires_grad=False, backward_hooks=None, state=None):
    need(isinstance(data, TensorRef), "parameter without tensor data")
    need(_hooks_empty(backward_hooks), "parameter with backward hooks")
    need(state is None or isinstance(state, dict), "parameter state")
    return data


def _scan_size(dims=()):
    need(isinstance(dims, (tuple, list)) and all(is_int(d) for d in dims), "torch.Size")
    return tuple(dims)


def codecs_encode(text=None, encoding="utf-8"):
    """``_codecs.encode`` as protocol-2 pickles use it for bytes: text encodings only."""
    need(isinstance(text, str) and encoding in ("latin1", "latin-1", "utf-8", "utf8"), "_codecs.encode arguments")
    return text.encode(encoding)


class NamespaceDict(dict):
    """Stand-in for ``argparse.Namespace`` (rosinality's ``train.py`` saves its parsed arguments
    in every checkpoint): rebuilt as a plain dict of its attributes, which must be text-keyed.
    ``argparse`` is never imported and nothing of the file's is called."""

    def __setstate__(self, state):
        need(isinstance(state, dict) and all(isinstance(k, str) for k in state),
             lambda: f"argparse.Namespace state {short(state)}")
        self.update(state)


NAMESPACE_GLOBAL = "argparse.Namespace"

_TORCH_ALLOWED: dict[str, Any] = {
    NAMESPACE_GLOBAL: NamespaceDict,
    "collections.OrderedDict": collections.OrderedDict,
    "torch._utils._rebuild_tensor": _scan_rebuild_tensor_v1,
    "torch._utils._rebuild_tensor_v2": _scan_rebuild_tensor,
    "torch._utils._rebuild_parameter": _scan_rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _scan_rebuild_parameter,
    "torch.Size": _scan_size,
    "builtins.set": set,
    "_codecs.encode": codecs_encode,
}
for _name in STORAGE_ITEMSIZE:
    _TORCH_ALLOWED[f"torch.{_name}"] = StorageType(_name)
TORCH_ALLOWED_GLOBALS = tuple(sorted(_TORCH_ALLOWED))


def _text(x) -> str | None:
    if isinstance(x, bytes):
        try:
            return x.decode("ascii")
        except UnicodeDecodeError:
            return None
    return x if isinstance(x, str) else None


class _BaseUnpickler(pickle.Unpickler):
    allowed: dict[str, Any] = {}

    def find_class(self, module, name):
        import _compat_pickle

        if (module, name) in _compat_pickle.NAME_MAPPING:  # Python 2 names, as pickle maps them
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        key = f"{module}.{name}"
        if key not in self.allowed:
            raise Refused(key[:200])
        return self.allowed[key]

    def persistent_load(self, pid):
        raise Refused(f"persistent id {short(pid)}")


class TorchScan(_BaseUnpickler):
    """Reads the pickle of a torch file with stand-ins for torch's globals: storages become
    :class:`StorageRef`, tensors :class:`TensorRef` (checked, not built). ``storages`` maps
    each declared key to its :class:`StorageRef` after :meth:`load`.

    ``legacy``: the persistent ids of the legacy format (with view metadata) instead of zip's.
    """

    allowed = _TORCH_ALLOWED

    def __init__(self, file, legacy: bool):
        super().__init__(file)
        self.legacy = legacy
        self.storages: dict[str, StorageRef] = {}
        self.views: dict[str, StorageRef] = {}

    def persistent_load(self, pid):
        need(isinstance(pid, tuple) and len(pid) >= 1, lambda: f"persistent id {short(pid)}")
        kind = _text(pid[0])
        if kind != "storage":
            raise Refused(f"persistent id {short(pid)}")
        need(len(pid) == (6 if self.legacy else 5), lambda: f"storage id {short(pid)}")
        stype, key, location, numel = pid[1:5]
        need(isinstance(stype, StorageType), lambda: f"storage type {short(stype)}")
        key = _text(key)
        need(key is not None and 0 < len(key) <= 64 and key.isprintable() and "/" not in key and key not in (".", ".."),
             lambda: f"storage key {short(pid[2])}")
        need(_text(location) is not None, lambda: f"storage location {short(location)}")
        need(is_int(numel) and 0 <= numel <= MAX_DIM, lambda: f"storage size {short(numel)}")
        ref = self.storages.get(key)
        if ref is None:
            ref = self.storages[key] = StorageRef(key, stype, numel)
        need(ref.stype.itemsize == stype.itemsize and ref.numel == numel,
             lambda: f"storage {key!r} declared twice with different types or sizes")
        if self.legacy and pid[5] is not None:
            view = pid[5]
            need(isinstance(view, tuple) and len(view) == 3, lambda: f"storage view {short(view)}")
            view_key, offset, view_numel = _text(view[0]), view[1], view[2]
            need(view_key is not None and is_int(offset) and is_int(view_numel), lambda: f"storage view {short(view)}")
            need(0 <= offset and 0 <= view_numel and offset + view_numel <= numel,
                 lambda: f"storage view {short(view)} outside storage {key!r} of {numel} elements")
            if view_key not in self.views:
                self.views[view_key] = StorageRef(f"{key}[{offset}:{offset + view_numel}]", stype, view_numel)
            return self.views[view_key]
        return ref


_MEMO_OPS = frozenset(("PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"))


def check_opcodes(f, size: int, where: str = "pickle") -> int:
    """Walk the opcodes of the pickle at ``f``'s position (read no further than ``size`` bytes)
    through its STOP without building anything, and refuse memo indices no pickle of its length
    can have: CPython's unpickler grows its memo table to twice the largest index, so one flipped
    ``LONG_BINPUT`` argument asked for tens of gigabytes. Returns the pickle's length (a legacy
    torch file's main pickle is followed by other data); ``f`` is left where it was."""
    import pickletools

    start = f.tell()
    largest = -1
    try:
        for op, arg, pos in pickletools.genops(BoundedFile(f, start + size)):
            if op.name in _MEMO_OPS:
                need(is_int(arg) and arg >= 0, lambda: f"{where}: memo index {short(arg)}")
                largest = max(largest, arg)
            if op.name == "STOP":
                length = pos + 1 - start
                need(largest <= length, lambda: f"{where}: memo index {largest} in a pickle of {length} bytes")
                return length
    except (ValueError, EOFError, UnicodeDecodeError) as e:  # genops: malformed, or no STOP before the end
        raise Malformed(f"{where}: {str(e).splitlines()[0][:160] if str(e) else type(e).__name__}") from None
    finally:
        f.seek(start)


class _PlainScan(_BaseUnpickler):
    """An unpickler that allows no global at all (for the small headers of legacy files)."""

    allowed: dict[str, Any] = {}


class BoundedFile(io.RawIOBase):
    """A read-only view of ``f`` that never reads past ``end`` (a pickle's declared lengths
    cannot make a read larger than what is left of the file)."""

    def __init__(self, f, end: int):
        super().__init__()
        self.f, self.end = f, end

    def readable(self):
        return True

    def tell(self):
        return self.f.tell()

    def read(self, n=-1):
        left = max(0, self.end - self.f.tell())
        return self.f.read(left if n is None or n < 0 else min(n, left))

    def readinto(self, b):
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def readline(self, size=-1):
        left = max(0, self.end - self.f.tell())
        return self.f.readline(left if size is None or size < 0 else min(size, left))


class LegacyLayout(NamedTuple):
    """What :func:`check_legacy_torch` found: the declared storages (each with the offset of its
    bytes, ``data_offset``), the byte order of those bytes, and where the main pickle starts."""

    storages: dict
    little_endian: bool
    main_pickle: int


def check_legacy_torch(f, end: int) -> LegacyLayout:
    """Check a legacy (non-zip) ``torch.save`` stream ``f`` (at its start, ``end`` bytes long):
    header pickles, the main pickle (:class:`TorchScan`), the storage key list, and that each
    listed storage's length header matches its declaration and its bytes are all there."""
    r = BoundedFile(f, end)

    def plain(where):  # a small pickle of plain data, its memo indices checked before it is loaded
        check_opcodes(f, end - f.tell(), where)
        return _PlainScan(r).load()

    magic = plain("legacy torch header")
    need(magic == LEGACY_MAGIC, "legacy torch header (magic number)")
    version = plain("legacy torch header")
    need(version == LEGACY_PROTOCOL, lambda: f"legacy torch protocol version {short(version)}")
    sys_info = plain("legacy torch system info")
    need(isinstance(sys_info, dict), "legacy torch system info")
    little = sys_info.get("little_endian", True)
    need(isinstance(little, bool), "legacy torch system info (little_endian)")
    main = f.tell()
    check_opcodes(f, end - main, "main pickle")
    scan = TorchScan(r, legacy=True)
    scan.load()
    keys = plain("legacy torch storage key list")
    need(isinstance(keys, list) and all(isinstance(k, str) for k in keys), "legacy torch storage key list")
    need(len(set(keys)) == len(keys), "legacy torch storage key list with repeated keys")
    need(set(keys) == set(scan.storages), lambda: (
        f"legacy torch storage key list ({len(keys)} keys) does not match the {len(scan.storages)} declared storages"))
    pos = f.tell()
    for key in keys:
        ref = scan.storages[key]
        f.seek(pos)
        head = f.read(8)
        need(len(head) == 8, lambda: f"storage {key!r}: the file ends before its data")
        count = int.from_bytes(head, "little")
        need(count == ref.numel, lambda: f"storage {key!r}: {count} elements stored, {ref.numel} declared")
        ref.data_offset = pos + 8  # where its bytes start in the stream (for readers)
        pos += 8 + ref.numel * ref.stype.itemsize
        need(pos <= end, lambda: f"storage {key!r}: the file ends before its data ({ref.numel} elements declared)")
    f.seek(0)
    return LegacyLayout(scan.storages, little, main)


def damaged_member(name: str, error: Exception) -> Malformed:
    """The refusal for a zip member whose bytes fail their CRC-32."""
    return Malformed(f"zip member {name!r}: {error} (the file is damaged)")


def check_torch_zip(path: str, storages_crc: bool = True) -> tuple[str, dict[str, StorageRef]]:
    """Check a zip-format ``torch.save`` file: its structure, every member's CRC-32, the
    pickle (:class:`TorchScan`) and the declared storages against the members. Returns the
    archive folder name and the declared storages. ``storages_crc=False`` leaves the CRC-32s
    of the ``data/`` members to a reader that reads them all anyway (zipfile checks each
    member's CRC-32 as its last byte is read): the storage bytes are then read once, not twice."""
    size = os.path.getsize(path)
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise Malformed(f"zip structure ({e})") from None
    with zf:
        infos = zf.infolist()
        need(infos, "zip file with no members")
        names = [i.filename for i in infos]
        need(len(set(names)) == len(names), "zip file with repeated member names")
        prefix = names[0].split("/", 1)[0]
        if not all(n.startswith(prefix + "/") for n in names) or f"{prefix}/data.pkl" not in names:
            shown = ", ".join(names[:4]) + (" ..." if len(names) > 4 else "")
            looks = " (a numpy .npz archive?)" if all(n.endswith(".npy") for n in names) else ""
            raise Malformed(f"zip contents: a torch.save file holds one folder with data.pkl; this holds {shown}{looks}")
        total = 0
        for i in infos:
            need(i.compress_type == zipfile.ZIP_STORED, lambda: f"zip member {i.filename!r} is compressed (torch.save stores members)")
            need(not i.flag_bits & 0x1, lambda: f"zip member {i.filename!r} is encrypted")
            need(i.file_size == i.compress_size, lambda: f"zip member {i.filename!r} sizes disagree")
            total += i.file_size
        need(total <= size, "zip members declared larger than the file")
        for i in infos:  # every byte against its CRC-32: a damaged file is refused, not converted
            if not storages_crc and i.filename.startswith(f"{prefix}/data/"):
                continue
            try:
                with zf.open(i) as m:
                    while m.read(1 << 22):
                        pass
            except zipfile.BadZipFile as e:
                raise damaged_member(i.filename, e) from None
        members = {i.filename: i for i in infos}
        pkl = zf.read(f"{prefix}/data.pkl")
        check_opcodes(io.BytesIO(pkl), len(pkl), "data.pkl")
        scan = TorchScan(io.BytesIO(pkl), legacy=False)
        scan.load()
        for key, ref in scan.storages.items():
            info = members.get(f"{prefix}/data/{key}")
            need(info is not None, lambda: f"storage {key!r}: no member data/{key} holds its data")
            nbytes = ref.numel * ref.stype.itemsize
            need(info.file_size == nbytes, lambda: f"storage {key!r}: member of {info.file_size} bytes, {nbytes} declared")
    return prefix, scan.storages


# ---- what loaders return --------------------------------------------------------------------


SCALARS = (type(None), bool, int, float, complex, str, bytes)


def join_path(path: str, key: Any) -> str:
    """``path.key`` for messages (``key`` cut short; any key type)."""
    k = key[:80] if isinstance(key, str) else short(key, 40)
    return f"{path}.{k}" if path else k


def plain_tree(obj: Any, leaf: Callable[[Any, str], Any], *, atomic: tuple = (), memo: dict | None = None,
               max_depth: int = MAX_DEPTH) -> Any:
    """``obj`` with dicts, lists, tuples and sets rebuilt (dict subclasses kept when
    ``OrderedDict``, else made plain dicts) and every other value passed through ``leaf(value,
    path)``, which returns the converted value or raises :class:`Malformed`.

    Values of the ``atomic`` types go to ``leaf`` whole, even if they are containers. Shared
    sub-objects are converted once (the result shares them too; pass ``memo``, a dict kept
    alive with the originals, to share across calls); nesting deeper than ``max_depth`` (or a
    structure that contains itself) is refused. Dict keys must be plain scalars or tuples of them."""
    memo = {} if memo is None else memo

    def key_ok(k, depth=0):
        if isinstance(k, tuple):
            return depth < 4 and all(key_ok(x, depth + 1) for x in k)
        return isinstance(k, SCALARS)

    def go(o, path, depth):
        if depth > max_depth:
            where = path if len(path) <= 60 else path[:30] + "..." + path[-27:]
            raise Malformed(f"nesting deeper than {max_depth} levels (at {where}), or a structure that contains itself")
        if isinstance(o, (dict, list, tuple, set, frozenset)) and not isinstance(o, atomic):
            k = id(o)
            if k in memo:  # entries hold the original too: its id cannot be reused meanwhile
                return memo[k][1]
            if isinstance(o, dict):
                out = collections.OrderedDict() if isinstance(o, collections.OrderedDict) else {}
                for key, v in o.items():
                    need(key_ok(key), lambda: f"dict key of type {type(key).__name__} at {path or 'the top'}")
                    out[key] = go(v, join_path(path, key), depth + 1)
            elif isinstance(o, list):
                out = [go(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(o)]
            elif isinstance(o, tuple):
                out = tuple(go(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(o))
            else:
                for v in o:
                    need(key_ok(v), lambda: f"set member of type {type(v).__name__} at {path or 'the top'}")
                out = type(o)(o) if type(o) in (set, frozenset) else set(o)
            memo[k] = (o, out)
            return out
        return leaf(o, path)

    return go(obj, "", 0)


def iter_arrays(obj: Any, path: str = ""):
    """``(path, array)`` for every numpy array or numpy scalar in a plain tree (each once)."""
    seen: set[int] = set()
    stack = [(obj, path)]
    while stack:
        o, p = stack.pop()
        if isinstance(o, (np.ndarray, np.generic)):
            yield p, o
        elif isinstance(o, (dict, list, tuple)):
            if id(o) in seen:
                continue
            seen.add(id(o))
            if isinstance(o, dict):
                children = [(v, join_path(p, k)) for k, v in o.items()]
            else:
                children = [(v, f"{p}[{i}]") for i, v in enumerate(o)]
            stack.extend(reversed(children))


def nonfinite(a) -> int:
    """How many NaN/inf values the numpy array or scalar ``a`` holds (0 for non-float dtypes)."""
    a = np.asarray(a)
    if a.dtype.kind not in "fc" or a.size == 0:
        return 0
    flat = a.reshape(-1) if a.flags.c_contiguous else a.ravel(order="K")
    bad = 0
    step = 1 << 22
    for i in range(0, flat.size, step):  # chunks: no full-size temporary
        bad += int(flat[i:i + step].size - np.count_nonzero(np.isfinite(flat[i:i + step])))
    return bad


def check_finite(obj: Any, path: str = "") -> tuple[str, int] | None:
    """The first ``(path, count)`` of an array in ``obj`` holding NaN/inf, or ``None``."""
    for p, a in iter_arrays(obj, path):
        bad = nonfinite(a)
        if bad:
            return p, bad
    return None
