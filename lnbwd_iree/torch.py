"""A PyTorch LayerNorm whose forward and backward run the IREE kernels.

CPU tensors cross to IREE's local-task device without copies: their memory
is imported as IREE host buffers, and results are written straight into
tensors allocated here. CUDA tensors are not supported yet (they need
device-pointer import into IREE's cuda driver): they raise
NotImplementedError rather than silently copying."""

from __future__ import annotations

import numbers

import ml_dtypes
import numpy as np
import torch
from iree import runtime as ireert

from .api import kernels_for

_ELEMENT_TYPES = {
    torch.float32: ireert.HalElementType.FLOAT_32,
    torch.float16: ireert.HalElementType.FLOAT_16,
    torch.bfloat16: ireert.HalElementType.BFLOAT_16,
}


def _numpy_view(tensor: torch.Tensor) -> np.ndarray:
    """A NumPy array sharing ``tensor``'s memory (bf16 through its bits)."""
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def as_device_array(kernels, tensor: torch.Tensor) -> ireert.DeviceArray:
    """``tensor``'s memory as an IREE array on the local device, without a copy."""
    if tensor.device.type != "cpu":
        raise NotImplementedError(f"lnbwd_iree.torch runs on CPU tensors only, got a {tensor.device} tensor")
    if tensor.dtype not in _ELEMENT_TYPES:
        raise TypeError(f"unsupported dtype {tensor.dtype}; expected float32, float16 or bfloat16")
    if not tensor.is_contiguous():
        raise ValueError("lnbwd_iree.torch needs contiguous tensors (call .contiguous() first)")
    buffer = kernels.device.allocator.import_host_allocation(
        _numpy_view(tensor),
        memory_type=ireert.MemoryType.HOST_LOCAL | ireert.MemoryType.DEVICE_VISIBLE,
        allowed_usage=ireert.BufferUsage.DEFAULT | ireert.BufferUsage.MAPPING,
    )
    view = ireert.HalBufferView(buffer, list(tensor.shape), _ELEMENT_TYPES[tensor.dtype])
    return ireert.DeviceArray(kernels.device, view, implicit_host_transfer=True)


class LayerNormFunction(torch.autograd.Function):
    """layer_norm over the last dim of ``x`` with the IREE forward and backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        kernels = kernels_for("local-task")
        x = x.contiguous()
        y = torch.empty_like(x)
        mean = torch.empty(x.shape[:-1], dtype=torch.float32)
        rstd = torch.empty(x.shape[:-1], dtype=torch.float32)
        kernels.forward(
            *(as_device_array(kernels, t) for t in (x, weight, bias)),
            eps=eps,
            out=tuple(as_device_array(kernels, t) for t in (y, mean, rstd)),
        )
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        kernels = kernels_for("local-task")
        x, weight, mean, rstd = ctx.saved_tensors
        dy = dy.contiguous()
        dx, dweight, dbias = torch.empty_like(x), torch.empty_like(weight), torch.empty_like(weight)
        kernels.backward(
            *(as_device_array(kernels, t) for t in (dy, x, weight, mean, rstd)),
            out=tuple(as_device_array(kernels, t) for t in (dx, dweight, dbias)),
        )
        return dx, dweight, dbias, None


class LayerNorm(torch.nn.Module):
    """Drop-in for ``torch.nn.LayerNorm`` (same arguments and state_dict keys)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        factory = {"device": device, "dtype": dtype}
        if elementwise_affine:
            self.weight = torch.nn.Parameter(torch.ones(self.normalized_shape, **factory))
            self.bias = torch.nn.Parameter(torch.zeros(self.normalized_shape, **factory)) if bias else None
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x):
        k = len(self.normalized_shape)
        if tuple(x.shape[-k:]) != self.normalized_shape:
            raise ValueError(f"input shape {tuple(x.shape)} does not end with normalized_shape {self.normalized_shape}")
        n = int(np.prod(self.normalized_shape))
        flat = x.reshape(*x.shape[:-k], n)
        weight = self.weight.reshape(n) if self.weight is not None else torch.ones(n, dtype=x.dtype)
        bias = self.bias.reshape(n) if self.bias is not None else torch.zeros(n, dtype=x.dtype)
        return LayerNormFunction.apply(flat, weight, bias, self.eps).reshape(x.shape)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
