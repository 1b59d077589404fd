"""Every per-dtype fact in one table: how a storage dtype is spelled in MLIR,
NumPy and torch, its size, and the arithmetic type its kernels compute and
keep per-row statistics in."""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class DType:
    name: str  # the MLIR element type, also the mangled signature's suffix
    numpy: np.dtype
    torch_name: str  # attribute of the torch module
    # Arithmetic and statistics type: f32, but f64 for f64 (which exists so
    # torch.autograd.gradcheck can run in double precision).
    accumulator: str

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def bits(self) -> int:
        return 8 * self.itemsize

    @property
    def stats_numpy(self) -> np.dtype:
        """NumPy dtype of per-row statistics (mean, rstd) of data in this dtype."""
        return TABLE[self.accumulator].numpy


TABLE: dict[str, DType] = {
    d.name: d
    for d in (
        DType("f32", np.dtype(np.float32), "float32", "f32"),
        DType("f16", np.dtype(np.float16), "float16", "f32"),
        DType("bf16", np.dtype(ml_dtypes.bfloat16), "bfloat16", "f32"),
        DType("f64", np.dtype(np.float64), "float64", "f64"),
    )
}
for _dtype in TABLE.values():
    if _dtype.accumulator not in TABLE:
        raise RuntimeError(f"dtypes.TABLE: {_dtype.name}'s arithmetic type {_dtype.accumulator} is not in the table")
    if TABLE[_dtype.accumulator].accumulator != _dtype.accumulator:
        raise RuntimeError(f"dtypes.TABLE: {_dtype.accumulator}, the arithmetic type of {_dtype.name}, must be its own")
DTYPES = tuple(TABLE)
ITEMSIZE = {name: d.itemsize for name, d in TABLE.items()}
ACCUMULATOR = {name: d.accumulator for name, d in TABLE.items()}
# NumPy dtype -> storage name, and back; statistics' NumPy dtype per storage name.
NUMPY_DTYPES = {d.numpy: name for name, d in TABLE.items()}
STORAGE_DTYPES = {name: d.numpy for name, d in TABLE.items()}
STATS_DTYPES = {name: d.stats_numpy for name, d in TABLE.items()}
