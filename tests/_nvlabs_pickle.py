"""Writing NVlabs-style network pickles in tests.

A real StyleGAN2-ADA / StyleGAN3 ``.pkl`` pickles each network module through
``torch_utils.persistence``: ``__reduce__`` returns the global
``torch_utils.persistence._reconstruct_persistent_obj`` with ``meta = {type, version, module_src,
class_name, state}``, ``state`` being the torch module's ``__dict__``. :func:`installed` puts
stand-in ``torch_utils.persistence`` and ``dnnlib.util`` modules into ``sys.modules`` (only so
that ``pickle`` can name those globals while writing), and :func:`network` builds torch modules
that pickle exactly that way.
"""

from __future__ import annotations

import contextlib
import sys
import types

import numpy as np
import torch

SOURCE_MARK = "# embedded module source (never run by the reader)\n"


def _reconstruct_persistent_obj(meta):  # named by pickles only; the reader never calls this
    raise AssertionError("the stand-in torch_utils.persistence was called")


class EasyDict(dict):
    pass


@contextlib.contextmanager
def installed():
    """Stand-in ``torch_utils.persistence`` / ``dnnlib.util`` modules, for pickling only."""
    tu = types.ModuleType("torch_utils")
    pers = types.ModuleType("torch_utils.persistence")
    dn = types.ModuleType("dnnlib")
    dnu = types.ModuleType("dnnlib.util")
    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    pers._reconstruct_persistent_obj = _reconstruct_persistent_obj
    EasyDict.__module__ = "dnnlib.util"
    dnu.EasyDict = EasyDict
    tu.persistence, dn.util = pers, dnu
    names = {"torch_utils": tu, "torch_utils.persistence": pers, "dnnlib": dn, "dnnlib.util": dnu}
    saved = {k: sys.modules.get(k) for k in names}
    sys.modules.update(names)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class PersistentModule(torch.nn.Module):
    """A torch module that pickles as an NVlabs persistent object."""

    def __init__(self, class_name: str, source: str, init_kwargs: dict | None = None, **attributes):
        super().__init__()
        self._pclass = class_name
        self._psource = source
        self._init_args = ()
        self._init_kwargs = EasyDict(init_kwargs or {})
        for k, v in attributes.items():
            setattr(self, k, v)

    def __reduce__(self):
        state = dict(self.__dict__)
        src, name = state.pop("_psource"), state.pop("_pclass")
        meta = dict(type="class", version=6, module_src=src, class_name=name, state=state)
        return (_reconstruct_persistent_obj, (meta,))


def network(class_name: str, source: str, params=(), buffers=(), children=(), init_kwargs=None, **attributes):
    """A persistent module with ``params`` / ``buffers`` ({name: array or None}) and ``children``."""
    m = PersistentModule(class_name, source, init_kwargs, **attributes)
    for k, v in dict(params).items():
        m.register_parameter(k, None if v is None else torch.nn.Parameter(torch.as_tensor(np.asarray(v)), requires_grad=False))
    for k, v in dict(buffers).items():
        m.register_buffer(k, None if v is None else torch.as_tensor(np.asarray(v)))
    for k, v in dict(children).items():
        m.add_module(k, v)
    return m


def from_state_dict(sd: dict, classes: dict, source: str, buffer_names, init_kwargs=None, attributes=None):
    """A persistent module tree holding the flat state dict ``sd`` (``{"a.b.name": array}``).

    ``classes`` maps a module path ("" for the root, "synthesis", ...) to its class name;
    ``buffer_names`` are the leaf names stored as buffers; ``attributes`` maps a module path to
    extra plain attributes (also ``None``-valued buffers, under the key ``"_none_buffers"``).
    """
    attributes = attributes or {}
    tree: dict = {}
    for key, value in sd.items():
        *path, leaf = key.split(".")
        node = tree
        for p in path:
            node = node.setdefault(p, {})
        node[leaf] = value

    def build(node, path):
        params, buffers, children = {}, {}, {}
        for k, v in node.items():
            if isinstance(v, dict):
                children[k] = build(v, f"{path}.{k}" if path else k)
            elif k in buffer_names:
                buffers[k] = v
            else:
                params[k] = v
        attrs = dict(attributes.get(path, {}))
        for k in attrs.pop("_none_buffers", ()):
            buffers[k] = None
        kwargs = init_kwargs if path == "" else None
        return network(classes.get(path, "Module"), source, params, buffers, children, kwargs, **attrs)

    return build(tree, "")


def snapshot(G_ema, **others) -> dict:
    """What the NVlabs training loops pickle: ``dict(G, D, G_ema, augment_pipe, training_set_kwargs)``."""
    out = dict(G=others.pop("G", G_ema), D=others.pop("D", network("Discriminator", SOURCE_MARK)), G_ema=G_ema)
    out["augment_pipe"] = others.pop("augment_pipe", None)
    out["training_set_kwargs"] = others.pop("training_set_kwargs", dict(path="data.zip", resolution=64, xflip=False))
    out.update(others)
    return out
