"""A PyTorch LayerNorm whose forward and backward run the IREE kernels.

Tensors cross between torch and IREE through DLPack without copies: inputs
are imported as IREE buffer views, and results are written straight into
tensors allocated here. CPU tensors run on IREE's local-task device, CUDA
tensors (device 0) on IREE's cuda driver. Ordering between torch's stream and
IREE's queue: torch's current stream is synchronised before each IREE call,
and each call is waited for before torch sees its results."""

from __future__ import annotations

import numbers

import numpy as np
import torch
from iree import runtime as ireert

from .api import kernels_for

# float64 runs on CPUs only (for torch.autograd.gradcheck).
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def kernels_for_tensor(tensor: torch.Tensor):
    """The IREE kernels for the device ``tensor`` lives on."""
    if tensor.device.type == "cpu":
        return kernels_for("local-task")
    if tensor.device.type == "cuda":
        if tensor.device.index not in (None, 0):
            raise NotImplementedError(f"lnbwd_iree.torch runs on cuda:0 only, got {tensor.device}")
        return kernels_for("cuda")
    raise NotImplementedError(f"lnbwd_iree.torch runs on CPU and CUDA tensors, got a {tensor.device} tensor")


def as_device_array(kernels, tensor: torch.Tensor) -> ireert.DeviceArray:
    """``tensor``'s memory as an IREE array on ``kernels``' device, without a copy."""
    if tensor.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"unsupported dtype {tensor.dtype}; expected float32, float16, bfloat16 or (CPU) float64")
    if not tensor.is_contiguous():
        raise ValueError("lnbwd_iree.torch needs contiguous tensors (call .contiguous() first)")
    view = kernels.device.from_dlpack_capsule(torch.utils.dlpack.to_dlpack(tensor.detach()))
    return ireert.DeviceArray(kernels.device, view, implicit_host_transfer=True)


def _before_iree(tensor: torch.Tensor) -> None:
    """Work torch queued on the inputs must finish before IREE reads them."""
    if tensor.device.type == "cuda":
        torch.cuda.current_stream(tensor.device).synchronize()


class LayerNormFunction(torch.autograd.Function):
    """layer_norm over the last dim of ``x`` with the IREE forward and backward."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        kernels = kernels_for_tensor(x)
        x = x.contiguous()
        y = torch.empty_like(x)
        stats_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        mean = torch.empty(x.shape[:-1], dtype=stats_dtype, device=x.device)
        rstd = torch.empty(x.shape[:-1], dtype=stats_dtype, device=x.device)
        _before_iree(x)
        kernels.forward(
            *(as_device_array(kernels, t) for t in (x, weight, bias)),
            eps=eps,
            out=tuple(as_device_array(kernels, t) for t in (y, mean, rstd)),
        )
        ctx.save_for_backward(x, weight, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, mean, rstd = ctx.saved_tensors
        kernels = kernels_for_tensor(x)
        dy = dy.contiguous()
        dx, dweight, dbias = torch.empty_like(x), torch.empty_like(weight), torch.empty_like(weight)
        _before_iree(dy)
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
        weight = self.weight.reshape(n) if self.weight is not None else torch.ones(n, dtype=x.dtype, device=x.device)
        bias = self.bias.reshape(n) if self.bias is not None else torch.zeros(n, dtype=x.dtype, device=x.device)
        return LayerNormFunction.apply(flat, weight, bias, self.eps).reshape(x.shape)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
