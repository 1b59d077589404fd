"""lnbwd-iree: LayerNorm-2D backward (dX, dgamma, dbeta) as linalg MLIR, compiled by IREE."""

from .api import kernels_for, layernorm_backward, layernorm_forward
from .runtime import LayerNormKernels

__all__ = ["LayerNormKernels", "kernels_for", "layernorm_backward", "layernorm_forward"]
