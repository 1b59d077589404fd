"""The registry of ops and their kernels: what `lnbwd-iree compile` builds,
the runtime loads and the tools cover. Adding an op is adding its module to
``OPS`` (docs/design.md, "Adding an op")."""

from __future__ import annotations

from .dtypes import ACCUMULATOR, DTYPES, ITEMSIZE
from .ops import layernorm, rmsnorm
from .ops.layernorm import LAYERNORM_BACKWARD, LAYERNORM_FORWARD
from .ops.rmsnorm import RMSNORM_BACKWARD, RMSNORM_FORWARD
from .specialization import Kernel, Specialization

OPS = {"layernorm": layernorm, "rmsnorm": rmsnorm}
KERNELS: tuple[Kernel, ...] = tuple(kernel for op in OPS.values() for kernel in op.KERNELS)

__all__ = ["ACCUMULATOR", "DTYPES", "ITEMSIZE", "KERNELS", "LAYERNORM_BACKWARD", "LAYERNORM_FORWARD", "OPS",
           "RMSNORM_BACKWARD", "RMSNORM_FORWARD", "Kernel", "Specialization"]
