"""Float64 NumPy references of each op's entry points, the one place their math is written.

The formulas use only what NumPy arrays and torch tensors share (operators,
``mean``/``sum`` with ``axis``/``keepdims``, ``reshape``) and convert their
inputs with ``to`` (float64 NumPy arrays by default), so the bench's float32
peers (NumPy, and torch's explicit math) run these same lines in their own
arithmetic type."""

from __future__ import annotations

import numpy as np

# Norm-wise relative error bounds against this reference, per storage dtype.
# Inputs are rounded to the storage type first and the reference sees the
# rounded values, so what remains is the arithmetic (~1e-7 in f32, ~1e-16 in
# f64) plus one rounding of each output to storage precision: unit roundoff
# u = 2^-11 (f16) or 2^-8 (bf16), bounded norm-wise by u. The bounds allow 4u
# for that rounding, and 100x the arithmetic error for f32 (1e-12 for f64).
TOLERANCE = {"f64": 1e-12, "f32": 1e-5, "f16": 4 * 2.0**-11, "bf16": 4 * 2.0**-8}


def float64(array):
    """The references' arithmetic: a float64 NumPy array."""
    return np.asarray(array, np.float64)


def forward_reference(x, gamma, beta, eps: float = 1e-5, *, to=float64):
    """(y, mean, rstd) in float64; mean/rstd have x's leading dims."""
    x, gamma, beta = to(x), to(gamma), to(beta)
    mean = x.mean(axis=-1)
    centred = x - mean[..., None]
    rstd = ((centred * centred).mean(axis=-1) + eps) ** -0.5
    return centred * rstd[..., None] * gamma + beta, mean, rstd


def backward_reference(dy, x, gamma, mean, rstd, *, to=float64):
    """(dX, dgamma, dbeta) in float64 from the saved statistics.

    dX uses the per-row means of g = gamma * dY and g * x_hat (not the column
    sums dbeta/dgamma that Composable Kernel's example 53 README writes)."""
    dy, x, gamma = to(dy), to(x), to(gamma)
    mean = to(mean).reshape(x.shape[:-1])[..., None]
    rstd = to(rstd).reshape(x.shape[:-1])[..., None]
    x_hat = (x - mean) * rstd
    g = dy * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))
    rows = tuple(range(x.ndim - 1))
    return dx, (dy * x_hat).sum(axis=rows), dy.sum(axis=rows)


def relative_error(actual, expected) -> float:
    """||actual - expected|| / ||expected|| in float64 (NaN if actual has NaN)."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    denom = np.linalg.norm(expected.ravel())
    return float(np.linalg.norm((actual - expected).ravel()) / (denom if denom > 0 else 1.0))


def rmsnorm_forward_reference(x, gamma, eps: float, *, to=float64):
    """RMSNorm's (y, rstd) in float64, rstd = 1/sqrt(mean(x^2) + eps) with x's leading dims."""
    x, gamma = to(x), to(gamma)
    rstd = ((x * x).mean(axis=-1) + eps) ** -0.5
    return x * rstd[..., None] * gamma, rstd


def rmsnorm_backward_reference(dy, x, gamma, rstd, *, to=float64):
    """RMSNorm's (dX, dgamma) in float64 from the saved rstd: with x_hat = x * rstd
    and g = gamma * dY, dX = rstd * (g - x_hat * mean_j(g * x_hat)) per row."""
    dy, x, gamma = to(dy), to(x), to(gamma)
    rstd = to(rstd).reshape(x.shape[:-1])[..., None]
    x_hat = x * rstd
    g = dy * gamma
    dx = rstd * (g - x_hat * (g * x_hat).mean(axis=-1, keepdims=True))
    return dx, (dy * x_hat).sum(axis=tuple(range(x.ndim - 1)))


# Each kernel's main entry point (named as the kernel, lnbwd_iree.kernels)
# and its reference: inputs in the entry's order, its scalars as keywords.
REFERENCES = {
    "layernorm_forward": forward_reference,
    "layernorm_backward": backward_reference,
    "rmsnorm_forward": rmsnorm_forward_reference,
    "rmsnorm_backward": rmsnorm_backward_reference,
}
