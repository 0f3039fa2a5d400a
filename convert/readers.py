"""Safe checkpoint readers. Reading a checkpoint never executes code from it.

- torch zip / legacy files (``.pth``, ``.pt``, ``.bin``, ``.tar``): ``torch.load(weights_only=True)``,
  which refuses every global outside torch's tensor allow-list; tensors become numpy arrays. An
  ``init_kwargs.json`` beside a state dict is attached to it (:class:`StateDict`).
- NVlabs network pickles (``.pkl``): an allow-listed unpickler that turns persistent network
  objects into plain records without running their embedded source (:func:`read_nvlabs_pickle`).
- HuggingFace model folders (``config.json`` + ``pytorch_model.bin``): the JSON config and the
  weights read as above.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from panda_jax.errors import CheckpointError


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


def to_numpy(obj: Any) -> Any:
    """Tensors -> numpy arrays, recursively through dicts, lists and tuples."""
    torch = _require_torch()
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.float()
        return t.numpy()
    if isinstance(obj, dict):
        return type(obj)((k, to_numpy(v)) for k, v in obj.items()) if not hasattr(obj, "default_factory") else {k: to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_numpy(v) for v in obj)
    return obj


def read_torch(path: str) -> Any:
    """A torch.save file read with ``weights_only=True``; tensors as numpy arrays."""
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file {path!r} does not exist; give the path of a .pth/.pt/.pkl file")
    torch = _require_torch()
    import pickle

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e).splitlines()
        refused = next((m.strip() for m in msg if "Unsupported global" in m or "GLOBAL" in m), msg[0] if msg else "")
        raise CheckpointError(
            f"{path!r} holds objects a weights-only load refuses ({refused}); "
            "it is not a plain state dict. Save the generator's state_dict() and convert that"
        ) from None
    except Exception as e:
        raise CheckpointError(
            f"{path!r} is not a readable PyTorch checkpoint ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "check the file is complete and is a torch.save file"
        ) from None
    return to_numpy(obj)


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
# run), storages are read by ``torch.load(weights_only=True)``, tensors become numpy arrays,
# numpy scalars/arrays/dtypes are rebuilt from their raw bytes. Any other global is refused
# before anything is imported or called.

NVLABS_RECORD = "nvlabs_network"
_LEGACY_TORCH_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


class StateDict(dict):
    """A state dict (``{key: array}``) read from a torch file, with the constructor keyword
    arguments found in an ``init_kwargs.json`` beside it (``None`` when there is none)."""

    init_kwargs: dict | None = None
    sidecar: str | None = None


INIT_KWARGS_FILE = "init_kwargs.json"


def with_init_kwargs(path: str, obj: Any) -> Any:
    """``obj`` (read from ``path``) as a :class:`StateDict` carrying the ``init_kwargs.json`` that
    lies beside ``path``, if ``obj`` is a state dict and that file exists; else ``obj`` as is."""
    import json

    sidecar = os.path.join(os.path.dirname(os.path.abspath(path)), INIT_KWARGS_FILE)
    if not isinstance(obj, dict) or is_record(obj) or not os.path.isfile(sidecar):
        return obj
    try:
        with open(sidecar, encoding="utf-8") as f:
            kwargs = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(
            f"{sidecar!r} (the constructor arguments beside {os.path.basename(path)!r}) is not readable JSON "
            f"({type(e).__name__}: {e}); fix or remove it"
        ) from None
    if not isinstance(kwargs, dict):
        raise CheckpointError(
            f"{sidecar!r} holds a JSON {type(kwargs).__name__}, not an object of constructor arguments; fix or remove it"
        )
    out = StateDict(obj)
    out.init_kwargs = kwargs
    out.sidecar = sidecar
    return out


class _Refused(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


class _Malformed(Exception):
    pass


def _need(cond: bool, what: str):
    if not cond:
        raise _Malformed(what)


class _EasyDict(dict):
    """Stand-in for ``dnnlib.util.EasyDict`` while unpickling (becomes a plain dict)."""


class _DtypeToken:
    """A numpy dtype being unpickled: only simple numeric/bool kinds; the pickled state may set
    the byte order and nothing else."""

    def __init__(self, spec, align=False, copy=True):
        _need(isinstance(spec, str) and len(spec) <= 4, f"numpy dtype {spec!r}")
        dt = np.dtype(spec)
        _need(dt.kind in "biufc" and not dt.hasobject and dt.fields is None, f"numpy dtype {spec!r}")
        self.dtype = dt

    def __setstate__(self, state):
        _need(isinstance(state, tuple) and len(state) >= 2, "numpy dtype state")
        order = state[1]
        _need(order in ("<", ">", "|", "="), f"numpy byte order {order!r}")
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
        _need(isinstance(state, tuple) and len(state) == 5, "numpy array state")
        _version, shape, dtype, fortran, raw = state
        _need(isinstance(dtype, _DtypeToken), "numpy array dtype")
        _need(isinstance(shape, tuple) and all(isinstance(s, int) and s >= 0 for s in shape), "numpy array shape")
        _need(isinstance(raw, (bytes, bytearray)), "numpy array data (object arrays are refused)")
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        _need(len(raw) == count * dtype.dtype.itemsize, "numpy array data length")
        arr = np.frombuffer(bytes(raw), dtype=dtype.dtype, count=count)
        self.array = arr.reshape(shape, order="F" if fortran else "C").copy()


def _np_reconstruct(cls, shape, typecode):
    _need(cls is _NDARRAY, "numpy _reconstruct of a class other than ndarray")
    return _ArrayToken()


def _np_scalar(dtype, data=None):
    _need(isinstance(dtype, _DtypeToken), "numpy scalar dtype")
    _need(isinstance(data, (bytes, bytearray)) and len(data) == dtype.dtype.itemsize, "numpy scalar data")
    return np.frombuffer(bytes(data), dtype=dtype.dtype, count=1)[0]


def _codecs_encode(text, encoding="utf-8"):
    _need(isinstance(text, str) and encoding in ("latin1", "latin-1", "utf-8", "utf8"), "_codecs.encode arguments")
    return text.encode(encoding)


def _torch_size(dims=()):
    _need(isinstance(dims, (tuple, list)) and all(isinstance(d, int) for d in dims), "torch.Size")
    return tuple(dims)


def _storage_from_bytes(data):
    """An embedded legacy ``torch.save(storage)``, read with ``weights_only=True``."""
    _need(isinstance(data, (bytes, bytearray)), "embedded tensor storage")
    torch = _require_torch()
    import io
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = torch.load(io.BytesIO(bytes(data)), map_location="cpu", weights_only=True)
    except Exception as e:
        raise _Malformed(f"embedded tensor storage ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
    _need(isinstance(storage, torch.storage.TypedStorage), "embedded tensor storage")
    return storage


def _rebuild_tensor(storage, offset, size, stride, requires_grad=False, backward_hooks=None, metadata=None):
    """A tensor view of ``storage`` as a numpy array (bounds checked; hooks must be empty)."""
    torch = _require_torch()
    _need(isinstance(storage, torch.storage.TypedStorage), "tensor storage")
    _need(isinstance(offset, int) and offset >= 0, "tensor storage offset")
    _need(isinstance(size, tuple) and all(isinstance(s, int) and s >= 0 for s in size), "tensor size")
    _need(isinstance(stride, tuple) and len(stride) == len(size) and all(isinstance(s, int) and s >= 0 for s in stride), "tensor stride")
    _need(not backward_hooks, "tensor with backward hooks")
    import warnings

    with warnings.catch_warnings():  # TypedStorage deprecation notices
        warnings.simplefilter("ignore")
        numel, dtype, untyped = storage.size(), storage.dtype, storage._untyped_storage
    if all(s > 0 for s in size):
        last = offset + sum((n - 1) * st for n, st in zip(size, stride))
        _need(last < numel, "tensor view outside its storage")
    t = torch.empty((0,), dtype=dtype).set_(untyped, offset, size, stride)
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.detach().numpy().copy()


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    _need(isinstance(data, np.ndarray), "parameter data")
    _need(not backward_hooks, "parameter with backward hooks")
    return data


def _plain(obj):
    """Unpickled values as plain Python/numpy: stand-ins resolved, dict subclasses made dicts."""
    if isinstance(obj, _ArrayToken):
        _need(obj.array is not None, "numpy array without data")
        return obj.array
    if isinstance(obj, _DtypeToken):
        return obj.dtype
    if isinstance(obj, dict) and obj.get("kind") == NVLABS_RECORD and "children" in obj:
        return obj
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_plain(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(v) for v in obj)
    if isinstance(obj, (set, frozenset)):
        return type(obj)(_plain(v) for v in obj)
    return obj


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


def _persistent_record(meta):
    """Stand-in for ``torch_utils.persistence._reconstruct_persistent_obj``: the object as a
    plain record. ``meta["module_src"]`` is hashed and searched for class names, never run."""
    _need(isinstance(meta, dict), "persistent object without a meta dict")
    _need(meta.get("type") == "class", f"persistent object of type {meta.get('type')!r}")
    name, src, state = meta.get("class_name"), meta.get("module_src"), meta.get("state")
    _need(isinstance(name, str) and name.isidentifier(), "persistent object class name")
    _need(isinstance(src, str), "persistent object source")
    _need(isinstance(state, dict), f"persistent {name} without a state dict")

    def tensors(key):
        group = state.get(key) or {}
        _need(isinstance(group, dict), f"{name}.{key}")
        for k, v in group.items():
            _need(isinstance(k, str) and (v is None or isinstance(v, np.ndarray)), f"{name}.{key}[{k!r}]")
        return dict(group)

    children = state.get("_modules") or {}
    _need(isinstance(children, dict), f"{name}._modules")
    for k, v in children.items():
        _need(isinstance(k, str), f"{name}._modules key")
        _need(v is None or (isinstance(v, dict) and v.get("kind") == NVLABS_RECORD), f"{name}._modules[{k!r}] (not a network module)")
    init_kwargs = _plain(state.get("_init_kwargs") or {})
    _need(isinstance(init_kwargs, dict), f"{name}._init_kwargs")
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    _need(isinstance(non_persistent, (set, frozenset, list, tuple)), f"{name}._non_persistent_buffers_set")
    attributes = {
        k: _plain(v)
        for k, v in state.items()
        if isinstance(k, str) and not k.startswith("_") and k != "training"
    }
    return {
        "kind": NVLABS_RECORD,
        "class_name": name,
        "module": _module_of(src),
        "source_sha256": hashlib.sha256(src.encode("utf-8", "surrogatepass")).hexdigest(),
        "version": meta.get("version"),
        "init_args": list(_plain(state.get("_init_args") or ())),
        "init_kwargs": init_kwargs,
        "parameters": tensors("_parameters"),
        "buffers": tensors("_buffers"),
        "non_persistent_buffers": sorted(str(b) for b in non_persistent),
        "children": {k: v for k, v in children.items() if v is not None},
        "attributes": attributes,
    }


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


def _safe_unpickler(f):
    import _compat_pickle
    import pickle

    class SafeUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            # Python 2 names (protocol < 3 pickles), as pickle's own find_class maps them.
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
            key = f"{module}.{name}"
            if key not in _ALLOWED:
                raise _Refused(key)
            return _ALLOWED[key]

        def persistent_load(self, pid):
            raise _Refused(f"persistent id {str(pid)[:60]}")

    return SafeUnpickler(f)


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
    (see :func:`read_nvlabs_pickle`), tensors as numpy arrays. Nothing in the file is run."""
    import pickle

    with open(path, "rb") as f:
        try:
            obj = _safe_unpickler(f).load()
        except _Refused as e:
            raise CheckpointError(_refusal_message(path, e.name)) from None
        except _Malformed as e:
            raise CheckpointError(
                f"{path!r} is not a well-formed NVlabs network pickle (bad {e}); nothing from it was run. "
                "Check the file is a complete network-snapshot .pkl"
            ) from None
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError, IndexError, KeyError, MemoryError) as e:
            raise CheckpointError(
                f"{path!r} is not a readable pickle ({type(e).__name__}: {str(e)[:200]}); "
                "check the file is complete and is an NVlabs network .pkl"
            ) from None
    return _plain(obj)


def read_nvlabs_pickle(path: str, network: str = "G_ema") -> Any:
    """An NVlabs network pickle read without executing its embedded code (allow-listed globals).

    Returns the record of ``network`` (``G_ema`` by default; also ``G``, ``D``, ...)::

        {"kind": "nvlabs_network", "class_name": "Generator", "module": "training.networks_stylegan3",
         "init_args": [...], "init_kwargs": {...}, "parameters": {name: array | None},
         "buffers": {name: array | None}, "children": {name: record}, "attributes": {...}, ...}

    ``module`` is told from the classes the embedded source defines (the pickle does not store
    it); :func:`state_dict` flattens a record. A legacy (non-zip) ``torch.save`` file is a pickle
    too: it is recognised by its magic number and read by :func:`read_torch`.
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint file {path!r} does not exist; give the path of a .pkl file")
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_HEAD))
    if head == _LEGACY_TORCH_HEAD:
        return read_torch(path)
    data = load_nvlabs_pickle(path)
    if is_record(data):
        return data
    if not isinstance(data, dict):
        raise CheckpointError(
            f"{path!r} holds a pickled {type(data).__name__}, not an NVlabs network snapshot "
            "(a dict with G, D, G_ema); give a network-snapshot .pkl"
        )
    if network not in data:
        nets = sorted(k for k, v in data.items() if is_record(v))
        raise CheckpointError(
            f"{path!r} has no network {network!r} (networks in it: {nets or 'none'}); "
            f"pick one of them" + (" or give a network-snapshot .pkl" if not nets else "")
        )
    if not is_record(data[network]):
        raise CheckpointError(f"{path!r}: {network!r} is a {type(data[network]).__name__}, not a network; pick another")
    return data[network]


def is_record(obj: Any) -> bool:
    """Is ``obj`` a network record from :func:`read_nvlabs_pickle`?"""
    return isinstance(obj, dict) and obj.get("kind") == NVLABS_RECORD and "children" in obj


def state_dict(record: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """The flat ``{prefix + "a.b.name": array}`` of a record, as ``module.state_dict()`` gives it:
    parameters, then persistent buffers (``None`` entries skipped), then the children's."""
    out: dict[str, np.ndarray] = {}
    for k, v in record["parameters"].items():
        if v is not None:
            out[prefix + k] = v
    skip = set(record.get("non_persistent_buffers", ()))
    for k, v in record["buffers"].items():
        if v is not None and k not in skip:
            out[prefix + k] = v
    for k, child in record["children"].items():
        out.update(state_dict(child, prefix + k + "."))
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

    Returns ``{"kind": "hf_folder", "path": path, "config": {...}, "state_dict": {key: array}}``.
    """
    present = sorted(os.listdir(path))
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
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(
            f"{config_path!r} is not valid JSON ({type(e).__name__}: {e}); restore the {HF_CONFIG} that came with the weights"
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
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"PK":  # torch zip format
        return with_init_kwargs(path, read_torch(path))
    if head[:1] == b"\x80":  # a pickle: an NVlabs network pickle or a legacy torch file
        return with_init_kwargs(path, read_nvlabs_pickle(path))
    raise CheckpointError(
        f"{path!r} is neither a PyTorch checkpoint nor a pickle (starts with {head!r}); "
        "give a .pth/.pt/.pkl checkpoint or a HuggingFace model folder"
    )
