"""NumPy in, NumPy out: the one-call API over a cached ``LayerNormKernels`` per device."""

from __future__ import annotations

import atexit
import functools
import os

import numpy as np

from .runtime import LayerNormKernels


@functools.lru_cache(maxsize=None)
def kernels_for(device: str = "local-task") -> LayerNormKernels:
    """The process-wide ``LayerNormKernels`` of ``device`` (opened and loaded once)."""
    return LayerNormKernels(device)


# Release devices and modules before interpreter teardown, not during it.
atexit.register(kernels_for.cache_clear)
# A forked child opens its own (runtime.py keeps the parent's, unused).
os.register_at_fork(after_in_child=kernels_for.cache_clear)


def as_array(name: str, value) -> np.ndarray:
    """``value`` as a NumPy array: arrays as they are; (nested) lists and tuples of
    numbers as float64, which needs every array of the call in float64 (on CPUs)."""
    if isinstance(value, np.ndarray):
        return value
    if type(value).__module__.split(".")[0] == "torch":
        raise TypeError(
            f"{name} is a torch tensor; this API takes NumPy arrays: use lnbwd_iree.torch.LayerNorm, "
            "or pass tensor.numpy()"
        )
    if isinstance(value, (list, tuple)):
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{name} must hold numbers, got a list of {array.dtype}")
        return array.astype(np.float64) if array.dtype.kind != "f" else array
    raise TypeError(f"{name} must be a NumPy array (or a list of numbers), got {type(value).__name__}")


def layernorm_backward(dy, x, gamma, mean=None, rstd=None, *, eps: float = 1e-5, device: str = "local-task"):
    """(dX, dgamma, dbeta) of LayerNorm over the last dim, as NumPy arrays.

    ``mean``/``rstd``: the forward's float32 statistics, one per row; when both
    are omitted they are recomputed from ``x`` with ``eps``. Arrays may also be
    lists of numbers (see ``as_array``); torch tensors go through ``lnbwd_iree.torch``."""
    inputs = [as_array(name, a) for name, a in (("dy", dy), ("x", x), ("gamma", gamma))]
    stats = [None if a is None else as_array(name, a) for name, a in (("mean", mean), ("rstd", rstd))]
    results = kernels_for(device).backward(*inputs, *stats, eps=eps)
    return tuple(np.asarray(r.to_host()) for r in results)


def layernorm_forward(x, gamma, beta, *, eps: float = 1e-5, device: str = "local-task"):
    """(y, mean, rstd) of LayerNorm over the last dim, as NumPy arrays (inputs: see ``as_array``)."""
    inputs = [as_array(name, a) for name, a in (("x", x), ("gamma", gamma), ("beta", beta))]
    results = kernels_for(device).forward(*inputs, eps=eps)
    return tuple(np.asarray(r.to_host()) for r in results)


def rmsnorm_forward(x, gamma, *, eps: float, device: str = "local-task"):
    """(y, rstd) of RMSNorm over the last dim, as NumPy arrays (inputs: see ``as_array``)."""
    inputs = [as_array(name, a) for name, a in (("x", x), ("gamma", gamma))]
    results = kernels_for(device).rmsnorm_forward(*inputs, eps=eps)
    return tuple(np.asarray(r.to_host()) for r in results)


def rmsnorm_backward(dy, x, gamma, rstd=None, *, eps: float | None = None, device: str = "local-task"):
    """(dX, dgamma) of RMSNorm over the last dim, as NumPy arrays. ``rstd``: the
    forward's, one per row; when omitted it is recomputed from ``x`` with ``eps``
    (then required)."""
    inputs = [as_array(name, a) for name, a in (("dy", dy), ("x", x), ("gamma", gamma))]
    stats = [] if rstd is None else [as_array("rstd", rstd)]
    results = kernels_for(device).rmsnorm_backward(*inputs, *stats, eps=eps)
    return tuple(np.asarray(r.to_host()) for r in results)
