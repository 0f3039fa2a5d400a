"""Tensor transforms and rule tables shared by the family converters.

A family's key map is a list of :class:`Rule`: the Flax parameter path (as
:func:`convert.common.flax_shapes` lists it), the source key or keys whose tensors it is made
of, and the transform from the PyTorch layout to the Flax one. :func:`apply_rules` runs a
table on a state dict of arrays, or of bare shapes (tuples) to check a key map without
weights: layout transforms then run on zero-stride views, which hold no memory.

Transforms take float32 arrays and return the parameter. Those that permute axes leave a
tensor of another rank as it is, so that the shape check names it instead of numpy failing.

=========================  ==================================================  ===============
transform                  layout change                                       used by
=========================  ==================================================  ===============
:func:`same`               none                                                all
:func:`dense`              dense ``[out, in] -> [in, out]``                    all but DCGAN
:func:`conv`               conv ``[out, in, kh, kw] -> [kh, kw, in, out]``     genforce, NVlabs, BigGAN
:func:`conv_flipped`       as :func:`conv`, kernel rotated by 180 degrees      NVlabs (``conv0``)
:func:`conv_transposed`    transposed conv ``[in, out, kh, kw] ->              PGGAN (fused)
                           [kh, kw, in, out]``
:func:`conv_transposed_    as :func:`conv_transposed`, rotated by 180 degrees  DCGAN
flipped`
:func:`projection`         ``[in, C, h, w] -> [in, h, w, C]``                  DCGAN (first layer)
:func:`nchw`               buffer ``[1, C, H, W] -> [1, H, W, C]``             genforce
:func:`chw`                buffer ``[C, H, W] -> [1, H, W, C]``                NVlabs (``const``)
:func:`hw`                 buffer ``[H, W] -> [1, H, W, 1]``                   NVlabs (noise)
:func:`minus_one`          ``x -> x - 1``                                      NVlabs (style bias)
:func:`scalar`             ``[1] -> []``                                       BigGAN (``gamma``)
:func:`conv1x1`            1x1 conv ``[out, in, 1, 1] -> [in, out]``           BigGAN
:func:`rgb`                ``[C, ...] -> [3, ...]`` (the RGB outputs)          BigGAN
:func:`spectral_norm`      ``(w, u, v) -> w / (u . W v)``, then a layout       BigGAN
=========================  ==================================================  ===============
"""

from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np

Transform = Callable[..., np.ndarray]


def shape_of(v) -> tuple[int, ...]:
    """The shape of an array, or a bare shape given as a tuple."""
    return tuple(int(d) for d in v) if isinstance(v, tuple) else tuple(np.shape(v))


def _permute(a, axes):
    return a.transpose(axes) if a.ndim == len(axes) else a


# ---- layout transforms ------------------------------------------------------------------


def same(a):
    """Unchanged (biases, scalars, NHWC-agnostic buffers)."""
    return a


def dense(a):
    """Dense weight ``[out, in] -> [in, out]``."""
    return _permute(a, (1, 0))


def conv(a):
    """Conv weight ``[out, in, kh, kw] -> [kh, kw, in, out]`` (OIHW -> HWIO)."""
    return _permute(a, (2, 3, 1, 0))


def conv_flipped(a):
    """Conv weight ``[out, in, kh, kw] -> [kh, kw, in, out]``, kernel rotated by 180 degrees
    (NVlabs runs its upsampling conv with ``flip_weight=False``)."""
    return conv(a[:, :, ::-1, ::-1] if a.ndim == 4 else a)


def conv_transposed(a):
    """Transposed-conv weight ``[in, out, kh, kw] -> [kh, kw, in, out]``."""
    return _permute(a, (2, 3, 0, 1))


def conv_transposed_flipped(a):
    """Transposed-conv weight ``[in, out, kh, kw] -> [kh, kw, in, out]``, kernel rotated by
    180 degrees: the ordinary conv on the zero-dilated input that equals the transposed conv."""
    return conv_transposed(a[:, :, ::-1, ::-1] if a.ndim == 4 else a)


def projection(a):
    """Transposed conv on a 1x1 input ``[in, C, h, w] -> [in, h, w, C]``: a dense map from the
    latent to an NHWC feature map."""
    return _permute(a, (0, 2, 3, 1))


def nchw(a):
    """Buffer ``[1, C, H, W] -> [1, H, W, C]`` (NCHW -> NHWC)."""
    return _permute(a, (0, 2, 3, 1))


def chw(a):
    """Buffer ``[C, H, W] -> [1, H, W, C]``."""
    return a.transpose(1, 2, 0)[None] if a.ndim == 3 else a


def hw(a):
    """Single-channel buffer ``[H, W] -> [1, H, W, 1]``."""
    return a[None, :, :, None] if a.ndim == 2 else a


def minus_one(a):
    """``x - 1``: NVlabs' style bias, whose constant 1 the port adds as genforce does."""
    return a - np.float32(1)


def scalar(a):
    """``[1] -> []``."""
    return a.reshape(()) if a.size == 1 else a


def conv1x1(a):
    """1x1 conv weight ``[out, in, 1, 1] -> [in, out]`` (a dense map on every pixel)."""
    return a[:, :, 0, 0].T if a.ndim == 4 and a.shape[2:] == (1, 1) else a


def rgb(a):
    """``[C, ...] -> [3, ...]``: the RGB outputs of a layer computed over more channels."""
    return a[:3]


def compose(*fns: Transform) -> Transform:
    """``compose(f, g)(a) == g(f(a))``: the transforms applied left to right."""

    def composed(a):
        for fn in fns:
            a = fn(a)
        return a

    composed.__name__ = "_".join(fn.__name__ for fn in fns)
    return composed


# ---- spectral norm (three source tensors) -----------------------------------------------


def _spectral_normalized(w, u, v):
    """``w / (u . (W v))`` with ``W = w.reshape(out, -1)``, exactly as torch's spectral norm
    computes it in eval mode (stored ``u``, ``v``; no power iteration)."""
    from .readers import _require_torch

    torch = _require_torch()
    wt = torch.from_numpy(np.ascontiguousarray(w))
    sigma = torch.dot(
        torch.from_numpy(np.ascontiguousarray(u)),
        torch.mv(wt.reshape(wt.shape[0], -1), torch.from_numpy(np.ascontiguousarray(v))),
    )
    return (wt / sigma).numpy()


def spectral_norm(layout: Transform = same) -> Transform:
    """``(weight_orig, weight_u, weight_v) -> layout(weight_orig / sigma)``.

    On bare shapes only ``layout`` runs (on the weight's shape): the scale changes no shape,
    and computing it would need the values. :func:`spectral_norm_mismatch` checks the vectors.
    """

    def fn(w, u, v):
        return layout(_spectral_normalized(w, u, v))

    fn.__name__ = f"spectral_norm_{layout.__name__}"
    fn.shape_only = lambda w, u, v: layout(w)
    return fn


def spectral_norm_mismatch(w, u, v) -> bool:
    """Do spectral-norm vectors of these shapes not fit a weight of shape ``w``?"""
    return len(w) < 2 or tuple(u) != (w[0],) or tuple(v) != (int(np.prod(w[1:])),)


# ---- rule tables ------------------------------------------------------------------------


class Rule(NamedTuple):
    """One Flax parameter: its ``path``, the ``source`` key (or keys, passed to ``transform`` in
    this order) of the PyTorch state dict, and the ``transform`` between the layouts."""

    path: str
    source: str | tuple[str, ...]
    transform: Transform = same

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.source,) if isinstance(self.source, str) else tuple(self.source)


def apply_rule(rule: Rule, values: Sequence) -> np.ndarray | tuple[int, ...]:
    """``rule.transform`` on the source tensors, or on bare shapes (then returns a shape)."""
    if all(isinstance(v, tuple) for v in values):
        views = [np.broadcast_to(np.float32(0), shape_of(v)) for v in values]
        fn = getattr(rule.transform, "shape_only", rule.transform)
        return tuple(np.shape(fn(*views)))
    return np.asarray(rule.transform(*(np.asarray(v, np.float32) for v in values)), np.float32)


def apply_rules(
    rules: Sequence[Rule], ignored: Sequence[str], source: Mapping
) -> tuple[dict, list[str], list[str]]:
    """``(params, used, ignored)``: ``{flax_path: array}`` (or ``{flax_path: shape}`` when
    ``source`` holds bare shapes), the source keys used, and those of ``ignored`` present.

    A rule whose source keys are not all in ``source`` is left out of ``params``;
    :func:`convert.common.check_keymap` then lists the parameter as not filled.
    """
    params, used = {}, []
    for rule in rules:
        keys = rule.keys
        if all(k in source for k in keys):
            params[rule.path] = apply_rule(rule, [source[k] for k in keys])
            used.extend(keys)
    return params, used, [k for k in ignored if k in source]
