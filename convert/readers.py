"""Safe checkpoint readers. Reading a checkpoint never executes code from it.

- torch zip / legacy files (``.pth``, ``.pt``, ``.bin``, ``.tar``): ``torch.load(weights_only=True)``,
  which refuses every global outside torch's tensor allow-list; tensors become numpy arrays.
"""

from __future__ import annotations

import hashlib
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


def read_nvlabs_pickle(path: str) -> Any:
    """An NVlabs network pickle read without executing its embedded code (allow-listed globals)."""
    raise CheckpointError(f"{path!r} is a pickle; NVlabs network pickles are not supported yet")


def read_hf_folder(path: str) -> Any:
    """A HuggingFace model folder (``config.json`` + ``pytorch_model.bin``)."""
    raise CheckpointError(f"{path!r} is a folder; HuggingFace model folders are not supported yet")


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
        return read_torch(path)
    if head[:1] == b"\x80":  # a pickle: an NVlabs network pickle or a legacy torch file
        return read_nvlabs_pickle(path)
    raise CheckpointError(
        f"{path!r} is neither a PyTorch checkpoint nor a pickle (starts with {head!r}); "
        "give a .pth/.pt/.pkl checkpoint or a HuggingFace model folder"
    )
