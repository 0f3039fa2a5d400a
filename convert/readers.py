"""Safe checkpoint readers. Reading a checkpoint never executes code from it.

- torch zip / legacy files (``.pth``, ``.pt``, ``.bin``, ``.tar``): checked first by
  :mod:`convert._safety` (zip CRCs, the pickle against an allow-list of globals, declared
  storage sizes against the bytes present, tensor views against their storages), then
  :mod:`convert.torchfree` (without torch; ``torch.load(weights_only=True)`` only for tensor
  metadata it does not rebuild); tensors become numpy arrays. An ``init_kwargs.json`` beside
  a state dict is attached to it (:class:`StateDict`).
- NVlabs network pickles (``.pkl``): an allow-listed unpickler that turns persistent network
  objects into plain records without running their embedded source (:func:`read_nvlabs_pickle`).
- HuggingFace model folders (``config.json`` + ``pytorch_model.bin``): the JSON config and the
  weights read as above.

Every failure is a :class:`~panda_jax.errors.CheckpointError` that says what is wrong: damaged,
truncated or empty files, files of another kind, nesting too deep, tensors larger than their
storage, more memory than the file could justify, NaN/inf in a tensor (named). Families check
the dtypes of the weights they convert with :func:`check_weights`.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import os
from typing import Any

import numpy as np

from panda_jax.errors import CheckpointError
from panda_jax.errors import first_line as _first_line

from . import _safety, torchfree


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _require_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        raise CheckpointError(
            "reading PyTorch checkpoints needs torch; install it with: pip install 'panda-jax[torch]'"
        ) from None
    import torch

    return torch


def _check_file(path: str, what: str) -> int:
    """The size of the regular file ``path``; a clear error if it is missing, a folder, or empty."""
    if os.path.isdir(path):
        raise CheckpointError(f"{path!r} is a folder, not a {what} file; give the path of the checkpoint file in it")
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file {path!r} does not exist; give the path of a {what} file")
    try:
        size = os.path.getsize(path)
        with open(path, "rb"):
            pass
    except OSError as e:
        raise CheckpointError(f"cannot read {path!r} ({e.strerror or e}); check the path and its permissions") from None
    if size == 0:
        raise CheckpointError(f"{path!r} is empty (0 bytes); the download or copy did not finish: fetch it again")
    return size


def _tensor_leaf(torch):
    """The :func:`_safety.plain_tree` leaf for what ``torch.load`` returns: tensors become numpy
    arrays (no copy, bfloat16 as float32), after their views are checked against their
    storages; plain scalars pass; anything else is refused."""

    def leaf(o, path):
        if isinstance(o, torch.Tensor):
            where = f"tensor {path or '(top)'}"
            _safety.need(o.layout == torch.strided and o.device.type == "cpu" and not o.is_quantized,
                         lambda: f"{where}: a {o.layout} tensor on {o.device} (only dense CPU tensors are read)")
            t = o.detach()
            storage = t.untyped_storage()
            itemsize = t.element_size()
            _safety.check_view(storage.nbytes() // itemsize, t.storage_offset(), tuple(t.shape), tuple(t.stride()), where)
            if t.dtype == torch.bfloat16:
                t = t.float()
            try:
                return t.numpy()
            except (TypeError, RuntimeError) as e:
                raise _safety.Malformed(f"{where}: dtype {t.dtype} has no numpy equivalent ({_first_line(e)})") from None
        if isinstance(o, _safety.SCALARS):
            return o
        raise _safety.Malformed(f"a {type(o).__name__} at {path or 'the top'} where data was expected")

    return leaf


def to_numpy(obj: Any) -> Any:
    """Tensors -> numpy arrays, recursively through dicts, lists and tuples (OrderedDicts stay
    OrderedDicts). Views are checked against their storages; nesting is capped at
    ``_safety.MAX_DEPTH``; shared sub-objects are converted once. Raises ``_safety.Malformed``."""
    torch = _require_torch()
    return _safety.plain_tree(obj, _tensor_leaf(torch))


def _finite_or_refuse(path: str, obj: Any) -> None:
    bad = _safety.check_finite(obj)
    if bad:
        name, count = bad
        raise CheckpointError(
            f"{path!r}: tensor {name!r} holds {count} NaN/inf value{'s' if count != 1 else ''}; the checkpoint is "
            "damaged or was saved from a diverged run. Use another checkpoint"
        )


def _torch_refusal(path: str, name: str) -> str:
    return (
        f"{path!r} needs the Python global {name!r}, which a checkpoint of weights does not need: loading it could "
        "run code from the file, so the file was refused and nothing from it was run. It is not a plain state "
        "dict; save the generator's state_dict() with torch.save and convert that"
    )


def _namespace_as_dict(torch):
    """While loading, ``argparse.Namespace`` (rosinality's ``train.py`` saves its arguments as
    one) is rebuilt by :class:`_safety.NamespaceDict`, a plain dict; ``argparse`` is never
    imported. torch < 2.6 cannot map a global name to a stand-in: such files are then refused."""
    import contextlib

    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2] if p.isdigit())
    if version < (2, 6) or not hasattr(torch.serialization, "safe_globals"):
        return contextlib.nullcontext()
    return torch.serialization.safe_globals([(_safety.NamespaceDict, _safety.NAMESPACE_GLOBAL)])


def read_torch(path: str) -> Any:
    """A ``torch.save`` file (zip or legacy format); tensors as numpy arrays.

    Both formats are read by :mod:`convert.torchfree`, without torch; the rare file holding
    what only torch rebuilds (tensor metadata) is read by ``torch.load(weights_only=True)``.

    Before it is read, :mod:`convert._safety` checks the file: the zip structure and
    every member's CRC-32 (a damaged file is refused, not converted), the pickle with an
    allow-list of globals, each declared storage against the bytes that hold it, each tensor
    view against its storage. After loading, nesting depth is capped and every floating tensor
    must be finite (the error names the first one that is not).
    """
    size = _check_file(path, ".pth/.pt")
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_HEAD))
    if head[:2] == b"PK":
        kind = "zip"
    elif _is_legacy_head(head):
        kind = "legacy"
    else:
        raise CheckpointError(
            f"{path!r} is not a torch.save file (it starts with {head[:8]!r}); "
            + _what_is_it(head) + "give a .pth/.pt checkpoint written by torch.save"
        )
    import warnings

    try:
        out = None
        try:  # no torch needed for what torch.save writes
            if kind == "zip":  # the storages' CRC-32s are checked as read_zip reads them
                prefix, _ = _safety.check_torch_zip(path, storages_crc=False)
                out = torchfree.read_zip(path, prefix)
            else:
                with open(path, "rb") as f:
                    out = torchfree.read_legacy(f, size)
                _safety.need(not isinstance(out, torchfree.Storage), "a bare storage where a state dict was expected")
        except torchfree.NeedsTorch:
            out = None
        if out is None:
            if kind == "zip":  # torch.load reads every member: check all their CRC-32s first
                _safety.check_torch_zip(path)
            torch = _require_torch()
            with warnings.catch_warnings():  # protocol and storage deprecation notices
                warnings.simplefilter("ignore")
                with _namespace_as_dict(torch):
                    obj = torch.load(path, map_location="cpu", weights_only=True)
            out = to_numpy(obj)
    except _safety.Refused as e:
        raise CheckpointError(_torch_refusal(path, e.name)) from None
    except _safety.Malformed as e:
        raise CheckpointError(
            f"{path!r} is not a readable PyTorch checkpoint (bad {e}); nothing from it was run. "
            "Check the file is complete and is a torch.save file"
        ) from None
    except RecursionError:
        raise CheckpointError(f"{path!r} is not a readable PyTorch checkpoint (nested too deeply); nothing from it was run") from None
    except MemoryError:
        raise CheckpointError(
            f"{path!r} is not a readable PyTorch checkpoint (it asks for more memory than there is; damaged?)"
        ) from None
    except Exception as e:  # torch and zipfile raise many kinds; all mean the same here
        raise CheckpointError(
            f"{path!r} is not a readable PyTorch checkpoint ({_first_line(e)}); "
            "check the file is complete and is a torch.save file"
        ) from None
    _finite_or_refuse(path, out)
    return out


def _is_legacy_head(head: bytes) -> bool:
    """Does ``head`` start a legacy (non-zip) ``torch.save`` file? (the magic number, pickled
    with protocol 2 to 5)."""
    return len(head) == len(_LEGACY_TORCH_HEAD) and head[0] == 0x80 and 2 <= head[1] <= 5 and head[2:] == _LEGACY_TORCH_HEAD[2:]


def _what_is_it(head: bytes) -> str:
    if head.startswith(b"\x93NUMPY"):
        return "it is a numpy .npy array (factors? use load_original or load_factors); "
    if head[:2] == b"PK":
        return "it is a zip archive; "
    if head.startswith((b"{", b"[")):
        return "it looks like JSON text; "
    if head[:1] == b"\x80":
        return "it is a Python pickle; "
    try:
        head.decode("utf-8")
        return "it looks like text; "
    except UnicodeDecodeError:
        return ""


# ---- NVlabs network pickles ---------------------------------------------------------------
#
# A StyleGAN2-ADA / StyleGAN3 ``.pkl`` is a plain pickle of ``dict(G=..., D=..., G_ema=...,
# augment_pipe=..., training_set_kwargs=...)``. Every network module in it is pickled as
# ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``meta = {type, version,
# module_src, class_name, state}``: ``module_src`` is the full source of the defining module,
# which the NVlabs code ``exec``s on loading, and ``state`` the module's ``__dict__``. Tensors
# are ``torch._utils._rebuild_tensor_v2(storage, ...)`` over storages embedded as the bytes of a
# legacy ``torch.save(storage)`` (``torch.storage._load_from_bytes``).
#
# The unpickler below resolves only the globals in ``_ALLOWED``, each to a function of ours that
# checks its arguments: persistent objects become plain records (their source is hashed, never
# run), storages are read by :mod:`convert.torchfree` (no torch), tensors become numpy arrays,
# numpy scalars/arrays/dtypes are rebuilt from their raw bytes. Any other global is refused
# before anything is imported or called.

NVLABS_RECORD = "nvlabs_network"
_LEGACY_TORCH_HEAD = b"\x80\x02\x8a\x0a" + (_safety.LEGACY_MAGIC).to_bytes(10, "little")

# A network is a tree of modules: no deeper, no larger than this.
MAX_MODULE_DEPTH = 64
MAX_MODULES = 100_000
MAX_ENTRIES = 1_000_000


class StateDict(dict):
    """A state dict (``{key: array}``) read from a torch file, with the constructor keyword
    arguments found in an ``init_kwargs.json`` beside it (``None`` when there is none)."""

    init_kwargs: dict | None = None
    sidecar: str | None = None


INIT_KWARGS_FILE = "init_kwargs.json"


def with_init_kwargs(path: str, obj: Any) -> Any:
    """``obj`` (read from ``path``) as a :class:`StateDict` carrying the ``init_kwargs.json`` that
    lies beside ``path``, if ``obj`` is a state dict and that file exists; else ``obj`` as is.
    Such a state dict is a network's weights: :func:`check_weights` applies."""
    sidecar = os.path.join(os.path.dirname(os.path.abspath(path)), INIT_KWARGS_FILE)
    if not isinstance(obj, dict) or is_record(obj) or not os.path.isfile(sidecar):
        return obj
    try:
        with open(sidecar, encoding="utf-8") as f:
            kwargs = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(
            f"{sidecar!r} (the constructor arguments beside {os.path.basename(path)!r}) is not readable JSON "
            f"({_first_line(e)}); fix or remove it"
        ) from None
    if not isinstance(kwargs, dict):
        raise CheckpointError(
            f"{sidecar!r} holds a JSON {type(kwargs).__name__}, not an object of constructor arguments; fix or remove it"
        )
    check_weights(obj, path)
    out = StateDict(obj)
    out.init_kwargs = kwargs
    out.sidecar = sidecar
    return out


# Integer buffers a generator may hold (BatchNorm's step counter); everything else is floating.
INTEGER_BUFFERS = ("num_batches_tracked",)


def check_weights(state: dict, source: str = "the checkpoint", integer_keys=INTEGER_BUFFERS) -> None:
    """Raise :class:`CheckpointError` unless ``state`` (``{key: array}``, a network's weights)
    holds only numeric numpy arrays, floating ones finite, integer or boolean ones only under
    keys whose last part is in ``integer_keys``. The error names the first bad tensor.

    The readers check finiteness everywhere; this adds the dtype policy for a network's own
    weights. Family converters call it on the state dict they convert (with their own
    ``integer_keys`` when a family has other integer buffers)."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{source} is not a state dict (a mapping of names to tensors) but a {type(state).__name__}")
    for key, value in state.items():
        name = key if isinstance(key, str) else _safety.short(key)
        if not isinstance(value, np.ndarray):
            raise CheckpointError(
                f"{source}: {name!r} is a {type(value).__name__}, not a tensor; a state dict maps names to tensors"
            )
        kind = value.dtype.kind
        if kind in "fc":
            bad = _safety.nonfinite(value)
            if bad:
                raise CheckpointError(
                    f"{source}: tensor {name!r} holds {bad} NaN/inf value{'s' if bad != 1 else ''}; the checkpoint "
                    "is damaged or was saved from a diverged run. Use another checkpoint"
                )
        elif kind in "biu":
            last = name.rsplit(".", 1)[-1]
            if last not in integer_keys:
                raise CheckpointError(
                    f"{source}: tensor {name!r} is {value.dtype}, not floating point; network weights are floats "
                    f"(integer tensors are expected only for {list(integer_keys)}). The checkpoint is damaged or not "
                    "a generator's weights"
                )
        else:
            raise CheckpointError(f"{source}: tensor {name!r} has dtype {value.dtype}, not a number type")


class NetworkRecord(dict):
    """A network module read from an NVlabs pickle, as a plain dict (see
    :func:`read_nvlabs_pickle`). Only :func:`_persistent_record` makes them: a dict in the file
    that merely looks like one is data, not a network."""

    depth: int = 1
    modules: int = 1
    entries: int = 0


class _Load:
    """What one pickle load shares: a memo (containers converted once) and a budget of bytes
    that the stand-ins may allocate (a small file cannot make them allocate gigabytes by
    referring to one storage or byte string many times)."""

    def __init__(self, budget: int):
        self.memo: dict = {}
        self.records: dict = {}
        self.left = budget

    def charge(self, nbytes: int, what: str):
        self.left -= nbytes
        _need(self.left >= 0, lambda: f"{what}: the file's tensors would take more memory than the file could hold "
                                      "(data referred to many times)")


_LOAD: contextvars.ContextVar[_Load] = contextvars.ContextVar("panda_jax_pickle_load")

_Refused = _safety.Refused
_Malformed = _safety.Malformed
_need = _safety.need
_short = _safety.short


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` while unpickling (becomes a plain dict)."""


class _DtypeToken:
    """A numpy dtype being unpickled: only simple numeric/bool kinds; the pickled state may set
    the byte order and nothing else."""

    def __init__(self, spec=None, align=False, copy=True):
        _need(isinstance(spec, str) and len(spec) <= 4, lambda: f"numpy dtype {_short(spec)}")
        try:
            dt = np.dtype(spec)
        except TypeError:
            raise _Malformed(f"numpy dtype {_short(spec)}") from None
        _need(dt.kind in "biufc" and not dt.hasobject and dt.fields is None, lambda: f"numpy dtype {_short(spec)}")
        self.dtype = dt

    def __setstate__(self, state):
        _need(isinstance(state, tuple) and len(state) >= 2, "numpy dtype state")
        order = state[1]
        _need(order in ("<", ">", "|", "="), lambda: f"numpy byte order {_short(order)}")
        _need(len(state) < 5 or all(s is None for s in state[2:5]), "structured or sub-array numpy dtype")
        if order in "<>":
            self.dtype = self.dtype.newbyteorder(order)


class _NdarrayToken:
    """Stands for ``numpy.ndarray`` as the first argument of ``_reconstruct``; not callable."""


_NDARRAY = _NdarrayToken()


class _ArrayToken:
    """A numpy array being unpickled: rebuilt from its raw bytes in ``__setstate__``."""

    array: np.ndarray | None = None

    def __setstate__(self, state):
        _need(self.array is None, "numpy array state given twice")
        _need(isinstance(state, tuple) and len(state) == 5, "numpy array state")
        _version, shape, dtype, fortran, raw = state
        _need(isinstance(dtype, _DtypeToken), "numpy array dtype")
        _need(isinstance(shape, tuple) and len(shape) <= 32, "numpy array shape")
        _need(all(_safety.is_int(s) and 0 <= s <= _safety.MAX_DIM for s in shape), "numpy array shape")
        _need(isinstance(fortran, bool), "numpy array order")
        _need(isinstance(raw, (bytes, bytearray)), "numpy array data (object arrays are refused)")
        count = 1
        for s in shape:
            count *= s
        _need(len(raw) == count * dtype.dtype.itemsize, "numpy array data length")
        _LOAD.get().charge(len(raw), "numpy array")
        arr = np.frombuffer(raw, dtype=dtype.dtype, count=count)
        self.array = arr.reshape(shape, order="F" if fortran else "C").copy()


def _np_reconstruct(cls=None, shape=None, typecode=None):
    _need(cls is _NDARRAY, "numpy _reconstruct of a class other than ndarray")
    return _ArrayToken()


def _np_scalar(dtype=None, data=None):
    _need(isinstance(dtype, _DtypeToken), "numpy scalar dtype")
    _need(isinstance(data, (bytes, bytearray)) and len(data) == dtype.dtype.itemsize, "numpy scalar data")
    return np.frombuffer(bytes(data), dtype=dtype.dtype, count=1)[0]


def _codecs_encode(text=None, encoding="utf-8"):
    out = _safety.codecs_encode(text, encoding)
    _LOAD.get().charge(len(out), "_codecs.encode")
    return out


def _torch_size(dims=()):
    _need(isinstance(dims, (tuple, list)) and all(_safety.is_int(d) for d in dims), "torch.Size")
    return tuple(dims)


def _storage_from_bytes(data=None):
    """An embedded legacy ``torch.save(storage)``, checked (declared sizes against the bytes
    present) and read without torch by :func:`convert.torchfree.read_legacy`: a
    :class:`~convert.torchfree.Storage`."""
    _need(isinstance(data, (bytes, bytearray)), "embedded tensor storage")
    import io

    _LOAD.get().charge(len(data), "embedded tensor storage")
    try:  # checks the stream (exactly one storage declared) and reads it
        storage = torchfree.read_legacy(io.BytesIO(bytes(data)), len(data))
    except _Refused as e:
        raise _Malformed(f"embedded tensor storage (it needs the global {e.name!r})") from None
    except _Malformed as e:
        raise _Malformed(f"embedded tensor storage ({e})") from None
    except Exception as e:  # torchfree.NeedsTorch cannot happen for a lone storage of an allowed type
        raise _Malformed(f"embedded tensor storage ({_first_line(e)})") from None
    _need(isinstance(storage, torchfree.Storage), "embedded tensor storage")
    return storage


def _rebuild_tensor(storage=None, offset=None, size=None, stride=None, requires_grad=False, backward_hooks=None,
                    metadata=None):
    """A tensor view of ``storage`` as a numpy array: bounds checked, no more elements than the
    storage holds (:func:`_safety.check_view`), hooks empty; the copy is charged to the load's budget."""
    _need(isinstance(storage, torchfree.Storage), "tensor storage")
    _need(not backward_hooks, "tensor with backward hooks")
    _need(not metadata, "tensor metadata")
    if isinstance(size, list):
        size = tuple(size)
    count = _safety.check_view(storage.numel, offset, size, stride, "tensor")
    _LOAD.get().charge(count * storage.array.dtype.itemsize, "tensor")
    return torchfree.view(storage.array, offset, size, stride)


def _rebuild_parameter(data=None, requires_grad=False, backward_hooks=None, state=None):
    _need(isinstance(data, np.ndarray), "parameter data")
    _need(not backward_hooks, "parameter with backward hooks")
    return data


def _plain_leaf(o, path):
    if isinstance(o, _ArrayToken):
        _need(o.array is not None, "numpy array without data (a bare numpy _reconstruct)")
        return o.array
    if isinstance(o, _DtypeToken):
        return o.dtype
    if isinstance(o, (NetworkRecord, np.ndarray, np.generic, bytearray) + _safety.SCALARS):
        return o
    raise _Malformed(f"a {type(o).__name__} at {path or 'the top'} where data was expected")


def _plain(obj):
    """Unpickled values as plain Python/numpy: stand-ins resolved, dict subclasses made dicts,
    network records kept; anything else (a bare global, a storage) refused. Shares the load's
    memo; nesting is capped (:func:`_safety.plain_tree`)."""
    return _safety.plain_tree(obj, _plain_leaf, atomic=(NetworkRecord,), memo=_LOAD.get().memo)


# Module names are not stored in the pickle; they are told by the classes the source defines.
_MODULE_SIGNATURES = (
    ("training.networks_stylegan3", ("class SynthesisInput(", "class SynthesisLayer(")),
    ("training.networks_stylegan2", ("class SynthesisBlock(", "class MappingNetwork(")),
    ("training.augment", ("class AugmentPipe(",)),
)


def _module_of(src: str) -> str | None:
    for name, marks in _MODULE_SIGNATURES:
        if all(m in src for m in marks):
            return name
    return None


def _persistent_record(meta=None):
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: the object as a
    plain :class:`NetworkRecord`. ``meta["module_src"]`` is hashed and searched for class
    names, never run. Every field is checked; the same ``meta`` gives the same record."""
    load = _LOAD.get()
    _need(isinstance(meta, dict), "persistent object without a meta dict")
    if id(meta) in load.records:
        return load.records[id(meta)][1]
    _need(meta.get("type") == "class", lambda: f"persistent object of type {_short(meta.get('type'))}")
    name, src, state, version = meta.get("class_name"), meta.get("module_src"), meta.get("state"), meta.get("version")
    _need(isinstance(name, str) and len(name) <= 200 and name.isidentifier(), lambda: f"persistent object class name {_short(name)}")
    _need(isinstance(src, str), f"persistent {name} source")
    _need(version is None or _safety.is_int(version), lambda: f"persistent {name} version {_short(version)}")
    _need(isinstance(state, dict), f"persistent {name} without a state dict")
    _need(all(isinstance(k, str) for k in state), f"persistent {name} state with a non-text key")

    def tensors(key):
        group = state.get(key)
        group = {} if group is None else group
        _need(isinstance(group, dict), f"{name}.{key}")
        for k, v in group.items():
            _need(isinstance(k, str) and (v is None or isinstance(v, np.ndarray)),
                  lambda: f"{name}.{key}[{_short(k)}] (a {type(v).__name__}, not a tensor)")
        return dict(group)

    children = state.get("_modules")
    children = {} if children is None else children
    _need(isinstance(children, dict), f"{name}._modules")
    for k, v in children.items():
        _need(isinstance(k, str) and k, f"{name}._modules key")
        _need(v is None or isinstance(v, NetworkRecord), lambda: f"{name}._modules[{_short(k)}] (not a network module)")
    children = {k: v for k, v in children.items() if v is not None}
    init_kwargs = _plain(state.get("_init_kwargs") or {})
    _need(isinstance(init_kwargs, dict), f"{name}._init_kwargs")
    init_args = _plain(state.get("_init_args") or ())
    _need(isinstance(init_args, (list, tuple)), f"{name}._init_args")
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    _need(isinstance(non_persistent, (set, frozenset, list, tuple)) and all(isinstance(b, str) for b in non_persistent),
          f"{name}._non_persistent_buffers_set")
    parameters, buffers = tensors("_parameters"), tensors("_buffers")
    attributes = {k: _plain(v) for k, v in state.items() if not k.startswith("_") and k != "training"}
    rec = NetworkRecord(
        kind=NVLABS_RECORD,
        class_name=name,
        module=_module_of(src),
        source_sha256=hashlib.sha256(src.encode("utf-8", "surrogatepass")).hexdigest(),
        version=version,
        init_args=list(init_args),
        init_kwargs=init_kwargs,
        parameters=parameters,
        buffers=buffers,
        non_persistent_buffers=sorted(non_persistent),
        children=children,
        attributes=attributes,
    )
    # A module tree, as torch builds them: bounded depth and size even if the file shares modules.
    rec.depth = 1 + max((c.depth for c in children.values()), default=0)
    rec.modules = 1 + sum(c.modules for c in children.values())
    rec.entries = len(parameters) + len(buffers) + sum(c.entries for c in children.values())
    _need(rec.depth <= MAX_MODULE_DEPTH, f"network modules nested deeper than {MAX_MODULE_DEPTH} levels")
    _need(rec.modules <= MAX_MODULES and rec.entries <= MAX_ENTRIES,
          f"network of more than {MAX_MODULES} modules or {MAX_ENTRIES} tensors (modules shared many times)")
    load.records[id(meta)] = (meta, rec)
    return rec


_ALLOWED = {
    "torch_utils.persistence._reconstruct_persistent_obj": _persistent_record,
    "dnnlib.util.EasyDict": _EasyDict,
    "dnnlib.EasyDict": _EasyDict,
    "collections.OrderedDict": dict,
    "builtins.set": set,
    "builtins.frozenset": frozenset,
    "_codecs.encode": _codecs_encode,
    "torch._utils._rebuild_tensor": _rebuild_tensor,
    "torch._utils._rebuild_tensor_v2": _rebuild_tensor,
    "torch._utils._rebuild_parameter": _rebuild_parameter,
    "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
    "torch.storage._load_from_bytes": _storage_from_bytes,
    "torch.Size": _torch_size,
}
for _np_mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[f"{_np_mod}.scalar"] = _np_scalar
    _ALLOWED[f"{_np_mod}._reconstruct"] = _np_reconstruct
_ALLOWED["numpy.dtype"] = _DtypeToken
_ALLOWED["numpy.ndarray"] = _NDARRAY
ALLOWED_GLOBALS = tuple(sorted(_ALLOWED))


class _NetworkUnpickler(_safety._BaseUnpickler):
    allowed = _ALLOWED


def _safe_unpickler(f):
    return _NetworkUnpickler(f)


def _refusal_message(path: str, name: str) -> str:
    if name.startswith("dnnlib.tflib"):
        return (
            f"{path!r} is a TensorFlow StyleGAN pickle (it needs {name!r}); it cannot be read without running "
            "TensorFlow code. Convert it to a PyTorch pickle with NVlabs' legacy.py, then convert that"
        )
    return (
        f"{path!r} needs the Python global {name!r}, which is not allowed in a network pickle: loading it could "
        "run code from the file, so the file was refused and nothing from it was run. Only NVlabs StyleGAN2-ADA / "
        "StyleGAN3 network pickles and torch state dicts are read; for another model save its state_dict() "
        "with torch.save and convert that"
    )


def load_nvlabs_pickle(path: str) -> Any:
    """The whole NVlabs pickle at ``path`` as plain data: persistent objects as records
    (see :func:`read_nvlabs_pickle`), tensors as numpy arrays. Nothing in the file is run.

    Every failure is a :class:`CheckpointError`: a global outside the allow-list (named),
    malformed records or tensors, nesting deeper than ``_safety.MAX_DEPTH``, more memory than
    three times the file's size, NaN/inf in a tensor (named)."""
    size = _check_file(path, ".pkl")
    token = _LOAD.set(_Load(budget=3 * size + (64 << 20)))
    try:
        with open(path, "rb") as f:
            try:
                _safety.check_opcodes(f, size, "opcodes")
            except _Malformed as e:
                raise CheckpointError(
                    f"{path!r} is not a readable pickle ({e}); nothing from it was run. "
                    "Check the file is complete and is an NVlabs network .pkl"
                ) from None
            obj = _safe_unpickler(_safety.BoundedFile(f, size)).load()
            out = _plain(obj)
    except CheckpointError:
        raise
    except _Refused as e:
        raise CheckpointError(_refusal_message(path, e.name)) from None
    except _Malformed as e:
        raise CheckpointError(
            f"{path!r} is not a well-formed NVlabs network pickle (bad {e}); nothing from it was run. "
            "Check the file is a complete network-snapshot .pkl"
        ) from None
    except RecursionError:
        raise CheckpointError(f"{path!r} is not a readable pickle (nested too deeply); nothing from it was run") from None
    except MemoryError:
        raise CheckpointError(
            f"{path!r} is not a readable pickle (it asks for more memory than there is; damaged?); nothing from it was run"
        ) from None
    except Exception as e:  # pickle, numpy and torch raise many kinds on damaged input
        raise CheckpointError(
            f"{path!r} is not a readable pickle ({_first_line(e)}); "
            "check the file is complete and is an NVlabs network .pkl"
        ) from None
    finally:
        _LOAD.reset(token)
    _finite_or_refuse(path, out)
    return out


def read_nvlabs_pickle(path: str, network: str = "G_ema") -> Any:
    """An NVlabs network pickle read without executing its embedded code (allow-listed globals).

    Returns the record of ``network`` (``G_ema`` by default; also ``G``, ``D``, ...)::

        {"kind": "nvlabs_network", "class_name": "Generator", "module": "training.networks_stylegan3",
         "init_args": [...], "init_kwargs": {...}, "parameters": {name: array | None},
         "buffers": {name: array | None}, "children": {name: record}, "attributes": {...}, ...}

    ``module`` is told from the classes the embedded source defines (the pickle does not store
    it); :func:`state_dict` flattens a record. The network's weights pass :func:`check_weights`.
    A legacy (non-zip) ``torch.save`` file is a pickle too: it is recognised by its magic number
    and read by :func:`read_torch`.
    """
    _check_file(path, ".pkl")
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_HEAD))
    if _is_legacy_head(head):
        return read_torch(path)
    data = load_nvlabs_pickle(path)
    if isinstance(data, NetworkRecord):
        check_weights(state_dict(data), f"{path!r}")
        return data
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path!r} holds a pickled {type(data).__name__}, not an NVlabs network snapshot "
            "(a dict with G, D, G_ema); give a network-snapshot .pkl"
        )
    if network not in data:
        nets = sorted(k for k, v in data.items() if isinstance(v, NetworkRecord) and isinstance(k, str))
        raise CheckpointError(
            f"{path!r} has no network {network!r} (networks in it: {nets or 'none'}); "
            f"pick one of them" + (" or give a network-snapshot .pkl" if not nets else "")
        )
    if not isinstance(data[network], NetworkRecord):
        raise CheckpointError(f"{path!r}: {network!r} is a {type(data[network]).__name__}, not a network; pick another")
    check_weights(state_dict(data[network]), f"{path!r} ({network})")
    return data[network]


def is_record(obj: Any) -> bool:
    """Is ``obj`` a network record from :func:`read_nvlabs_pickle`? (or a dict built like one)"""
    return isinstance(obj, dict) and obj.get("kind") == NVLABS_RECORD and isinstance(obj.get("children"), dict)


def state_dict(record: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """The flat ``{prefix + "a.b.name": array}`` of a record, as ``module.state_dict()`` gives it:
    parameters, then persistent buffers (``None`` entries skipped), then the children's.
    A malformed record (not made by the reader) is a :class:`CheckpointError`."""
    out: dict[str, np.ndarray] = {}

    def walk(rec, prefix, depth):
        if not is_record(rec) or depth > MAX_MODULE_DEPTH:
            raise CheckpointError(f"network record at {prefix or 'the top'!r} is malformed or nested too deeply")
        groups = [rec.get("parameters", {}), rec.get("buffers", {})]
        if not all(isinstance(g, dict) for g in groups):
            raise CheckpointError(f"network record at {prefix or 'the top'!r} has malformed parameters or buffers")
        skip = set(rec.get("non_persistent_buffers", ()))
        for i, group in enumerate(groups):
            for k, v in group.items():
                if v is not None and not (i == 1 and k in skip):
                    out[prefix + str(k)] = v
        for k, child in rec["children"].items():
            walk(child, prefix + str(k) + ".", depth + 1)
            if len(out) > MAX_ENTRIES:
                raise CheckpointError(f"network record has more than {MAX_ENTRIES} tensors; it is malformed")

    walk(record, prefix, 0)
    return out


def network_source(obj: Any, positional: tuple[str, ...], what: str) -> tuple[dict, dict | None, str]:
    """``(state dict, constructor kwargs or None, where they came from)`` of an NVlabs network as
    :func:`read` returns it: a pickle's record (its stored arguments; the positional ones named
    by ``positional``) or a state dict (the ``init_kwargs.json`` beside it, if there was one)."""
    if is_record(obj):
        kwargs = dict(obj.get("init_kwargs") or {})
        for name, value in zip(positional, obj.get("init_args") or ()):
            kwargs.setdefault(name, value)
        return state_dict(obj), kwargs, "the pickle's stored constructor arguments"
    if isinstance(obj, dict):
        kwargs = getattr(obj, "init_kwargs", None)
        where = repr(getattr(obj, "sidecar", None)) if kwargs is not None else "the state dict"
        return obj, (dict(kwargs) if kwargs is not None else None), where
    raise CheckpointError(f"expected {what} state dict or network pickle, got a {type(obj).__name__}")


HF_WEIGHTS = "pytorch_model.bin"
HF_CONFIG = "config.json"


def read_hf_folder(path: str) -> Any:
    """A HuggingFace model folder (``config.json`` + ``pytorch_model.bin``, as
    pytorch-pretrained-BigGAN writes them; the .bin in the zip or the legacy torch format).

    Returns ``{"kind": "hf_folder", "path": path, "config": {...}, "state_dict": {key: array}}``;
    the weights pass :func:`check_weights`.
    """
    try:
        present = sorted(os.listdir(path))
    except OSError as e:
        raise CheckpointError(f"cannot list folder {path!r} ({e.strerror or e}); check the path and its permissions") from None
    listing = ", ".join(present[:10]) + (" ..." if len(present) > 10 else "") if present else "nothing"
    weights = os.path.join(path, HF_WEIGHTS)
    config_path = os.path.join(path, HF_CONFIG)
    if not os.path.isfile(weights):
        raise CheckpointError(
            f"folder {path!r} has no {HF_WEIGHTS} (it holds: {listing}); a HuggingFace model folder needs "
            f"{HF_WEIGHTS} and {HF_CONFIG}. Put the weights file there, or give the path of a checkpoint file"
        )
    if not os.path.isfile(config_path):
        raise CheckpointError(
            f"folder {path!r} has {HF_WEIGHTS} but no {HF_CONFIG} (it holds: {listing}); put the {HF_CONFIG} "
            f"that came with the weights beside it, or convert {weights!r} itself (the config is then "
            "inferred from the tensor shapes)"
        )
    try:
        with open(config_path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(
            f"{config_path!r} is not valid JSON ({_first_line(e)}); restore the {HF_CONFIG} that came with the weights"
        ) from None
    if not isinstance(config, dict):
        raise CheckpointError(
            f"{config_path!r} holds a JSON {type(config).__name__}, not an object of model settings; "
            f"restore the {HF_CONFIG} that came with the weights"
        )
    try:
        state_dict = read_torch(weights)
    except CheckpointError as e:
        raise CheckpointError(f"in HuggingFace folder {path!r}: {e}") from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, np.ndarray) for v in state_dict.values()):
        raise CheckpointError(
            f"{weights!r} is not a state dict (a mapping of names to tensors) but a {type(state_dict).__name__}; "
            "save the model's state_dict() as pytorch_model.bin"
        )
    check_weights(state_dict, repr(weights))
    return {"kind": "hf_folder", "path": path, "config": config, "state_dict": dict(state_dict)}


def read(path: str) -> Any:
    """Read any supported source: a torch file, an NVlabs pickle, or a HuggingFace folder.

    Returns plain Python data with numpy arrays: a (nested) state dict for torch files, the
    reader's records for pickles and folders.
    """
    if os.path.isdir(path):
        return read_hf_folder(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist; give the path of a checkpoint file or folder")
    _check_file(path, "checkpoint")
    with open(path, "rb") as f:
        head = f.read(8)
    if head[:2] == b"PK":  # torch zip format
        return with_init_kwargs(path, read_torch(path))
    if head[:1] == b"\x80":  # a pickle: an NVlabs network pickle or a legacy torch file
        return with_init_kwargs(path, read_nvlabs_pickle(path))
    raise CheckpointError(
        f"{path!r} is neither a PyTorch checkpoint nor a pickle (it starts with {head!r}); "
        + _what_is_it(head) + "give a .pth/.pt/.pkl checkpoint or a HuggingFace model folder"
    )
