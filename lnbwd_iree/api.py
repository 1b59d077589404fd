"""NumPy in, NumPy out: the one-call API over a cached ``LayerNormKernels`` per device."""

from __future__ import annotations

import atexit
import functools

import numpy as np

from .runtime import LayerNormKernels


@functools.lru_cache(maxsize=None)
def kernels_for(device: str = "local-task") -> LayerNormKernels:
    """The process-wide ``LayerNormKernels`` of ``device`` (opened and loaded once)."""
    return LayerNormKernels(device)


# Release devices and modules before interpreter teardown, not during it.
atexit.register(kernels_for.cache_clear)


def layernorm_backward(dy, x, gamma, mean=None, rstd=None, *, eps: float = 1e-5, device: str = "local-task"):
    """(dX, dgamma, dbeta) of LayerNorm over the last dim, as NumPy arrays.

    ``mean``/``rstd``: the forward's float32 statistics, one per row; when both
    are omitted they are recomputed from ``x`` with ``eps``."""
    results = kernels_for(device).backward(dy, x, gamma, mean, rstd, eps=eps)
    return tuple(np.asarray(r.to_host()) for r in results)


def layernorm_forward(x, gamma, beta, *, eps: float = 1e-5, device: str = "local-task"):
    """(y, mean, rstd) of LayerNorm over the last dim, as NumPy arrays."""
    results = kernels_for(device).forward(x, gamma, beta, eps=eps)
    return tuple(np.asarray(r.to_host()) for r in results)
