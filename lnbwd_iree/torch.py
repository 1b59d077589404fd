"""PyTorch LayerNorm and RMSNorm modules whose forward and backward run the IREE kernels.

The forward and backward are the custom ops ``lnbwd_iree::layer_norm_fwd``
and ``lnbwd_iree::layer_norm_bwd`` (``torch.library.custom_op``, with fake
implementations and autograd), so ``torch.compile`` (also ``fullgraph=True``)
and ``torch.export`` treat them as single opaque ops; RMSNorm's are
``lnbwd_iree::rms_norm_fwd`` and ``lnbwd_iree::rms_norm_bwd``, in the same form. Tensors cross to IREE
through DLPack without copies; the [N] weight and bias are imported once and
reused while they are alive, and where each call is waited for, a call's
other tensors are imported without ownership and reused by address
(``IreeBinding.borrowed``).

CPU tensors run on IREE's local-task. ``cuda:N`` tensors skip IREE's
runtime: the artifact's kernels are launched from its launch plan on torch's
current stream (``DirectBinding``), unless LNBWD_IREE_TORCH_CUDA_PATH=iree
picks IREE's cuda driver (the device with the same UUID; ``HostOrdering``).
On ROCm builds of torch ``cuda:N`` runs on IREE's hip driver by default, with
one IREE device per (GPU, torch stream) created on that stream
(``HipStreamOrdering``); LNBWD_IREE_TORCH_HIP_PATH=direct launches the HSACO
from the launch plan on torch's stream instead (not yet run on AMD hardware).
Each binding implements ``run`` (entry, input and output tensors, scalars).

Meta tensors and torch.func.vmap go through the custom ops (their fake
kernels and vmap rules); torch.func's autodiff transforms are refused by name
(``_refuse_autodiff_transforms``)."""

from __future__ import annotations

import atexit
import ctypes
import math
import numbers
import os
import threading

import torch
from iree import runtime as ireert
from torch._C._functorch import TransformType
from torch.utils._python_dispatch import _get_current_dispatch_mode

from .api import kernels_for
from .direct_launch import DirectRunner
from .dtypes import TABLE
from .kernels import LAYERNORM_BACKWARD, LAYERNORM_FORWARD, RMSNORM_BACKWARD, RMSNORM_FORWARD
from .recent import RecentlyUsed
from .runtime import DLTensor, LayerNormKernels, check_eps
from .specialization import Kernel, Role
from .targets import target_for

# float64 runs on CPUs only (for torch.autograd.gradcheck).
_DTYPES = {getattr(torch, d.torch_name): d for d in TABLE.values()}
SUPPORTED_DTYPES = tuple(_DTYPES)
# How cuda:N tensors reach the kernels: "direct" launches them on torch's
# current stream (DirectBinding), "iree" goes through IREE's runtime
# (IreeBinding: HostOrdering on CUDA, HipStreamOrdering on ROCm). CUDA builds
# of torch default to direct, ROCm builds to iree until the direct HIP launch
# has run on AMD hardware.
GPU_PATH_ENV = {"cuda": "LNBWD_IREE_TORCH_CUDA_PATH", "hip": "LNBWD_IREE_TORCH_HIP_PATH"}
GPU_PATH_DEFAULT = {"cuda": "direct", "hip": "iree"}
GPU_PATHS = ("direct", "iree")
# IREE's memory import and the kernels' vector loads need this alignment; a
# tensor not so aligned (a view at an offset) is copied once for the call.
ALIGNMENT = 64


def gpu_path() -> str:
    """"direct" or "iree": how this torch build's cuda:N tensors reach the kernels (GPU_PATH_ENV)."""
    api = "hip" if torch.version.hip else "cuda"
    path = os.environ.get(GPU_PATH_ENV[api], GPU_PATH_DEFAULT[api])
    if path not in GPU_PATHS:
        raise ValueError(f"{GPU_PATH_ENV[api]}={path!r}; expected one of {GPU_PATHS}")
    return path


# Read once: the ops' tags below are fixed when they are registered, and the
# bindings must take the path the tags describe.
GPU_PATH = gpu_path()
# Through IREE's runtime the ops synchronise with the host (cuda driver) or
# with IREE's queue (hip): a CUDA graph replay would skip that and IREE's
# submission. The direct launches are plain kernels on torch's stream, which
# graphs capture.
_OP_TAGS = (torch.Tag.cudagraph_unsafe,) if GPU_PATH == "iree" else ()


def stats_dtype(dtype: torch.dtype) -> torch.dtype:
    """mean and rstd are kept in the arithmetic type: f32, or f64 for f64 data."""
    return getattr(torch, TABLE[_DTYPES[dtype].accumulator].torch_name)


class HostOrdering:
    """CPU, and CUDA: IREE 3.13's cuda driver runs on a stream of its own and
    can neither wait on nor signal CUDA events, so the host orders the two:
    torch's stream is synchronised once before a call (its output tensors are
    allocated first, so memory torch recycled from earlier kernels is free)
    and the call is waited for before torch sees its results."""

    wait = True

    def __init__(self, torch_device: torch.device):
        self.torch_device = torch_device

    def before(self) -> None:
        if self.torch_device.type == "cuda":
            torch.cuda.current_stream(self.torch_device).synchronize()

    def after(self, kernels: LayerNormKernels) -> None:
        pass  # the call itself waited (``wait``)


class HipStreamOrdering:
    """HIP: the IREE device was created on torch's stream
    (``hip_external_stream``), so everything torch queued before a call runs
    before it. IREE may issue a call's work from its own thread, later than
    the call returns; so the call's signal is exported as a HIP event and
    torch's stream waits for it on the device (no host wait)."""

    wait = False

    def __init__(self, stream_handle: int, hip_runtime):
        self.stream_handle = stream_handle
        self.hip_runtime = hip_runtime

    def before(self) -> None:
        pass

    def after(self, kernels: LayerNormKernels) -> None:
        timepoint = ireert.HalExternalTimepoint()
        timeline, value = kernels.queued()  # what the call just queued signals
        # The event stays IREE's: its hip semaphore takes it from its event
        # pool and keeps it in the value's queue item, so it is not destroyed here.
        timeline.export_timepoint(
            value, ireert.ExternalTimepointType.HIP_EVENT, ireert.ExternalTimepointFlags.NONE, timepoint
        )
        status = self.hip_runtime.hipStreamWaitEvent(
            ctypes.c_void_p(self.stream_handle), ctypes.c_void_p(timepoint.hip_event), ctypes.c_uint(0)
        )
        if status != 0:
            raise RuntimeError(f"hipStreamWaitEvent on torch's stream failed with hipError_t {status}")


def hip_device_params(stream_handle: int) -> dict:
    """IREE hip device parameters that put its work on an existing HIP stream."""
    return {"hip_external_stream": str(stream_handle)}


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


# DLPack type codes (kDLFloat = 2, kDLBfloat = 4) and bits of the supported dtypes.
_DLPACK_TYPES = {torch.float32: (2, 32), torch.float16: (2, 16), torch.bfloat16: (4, 16), torch.float64: (2, 64)}


class _BorrowCapsule:
    """DLPack capsules that describe memory without owning it. IREE keeps the
    DLManagedTensor a capsule points to until it releases the import, then
    calls its deleter: so every capsule points to this one struct, which lives
    as long as the process and whose deleter stays NULL (the one field IREE
    reads after the import); the tensor fields are read only while
    ``from_dlpack_capsule`` runs, under the lock."""

    MAX_DIMS = 8
    _name = b"dltensor"
    _new = ctypes.pythonapi.PyCapsule_New
    _new.restype = ctypes.py_object
    _new.argtypes = (ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p)

    def __init__(self):
        self._struct = _DLManagedTensor()
        # Never freed, not even at interpreter teardown, when IREE may still release imports.
        ctypes.pythonapi.Py_IncRef(ctypes.py_object(self._struct))
        self._shape = (ctypes.c_int64 * self.MAX_DIMS)()
        self._struct.dl_tensor.shape = self._shape
        self._struct.dl_tensor.lanes = 1
        self.lock = threading.Lock()

    def capsule(self, tensor: torch.Tensor):
        """A capsule of ``tensor``'s (contiguous) memory; call with ``lock`` held
        and import it before the next call."""
        dl = self._struct.dl_tensor
        dl.data = tensor.data_ptr()
        # kDLCPU = 1, kDLCUDA = 2 (IREE reads neither, but the capsule should say where the memory is).
        dl.device_type = 2 if tensor.is_cuda else 1
        dl.device_id = tensor.device.index or 0
        dl.ndim = tensor.dim()
        dl.code, dl.bits = _DLPACK_TYPES[tensor.dtype]
        for i, size in enumerate(tensor.shape):
            self._shape[i] = size
        return self._new(ctypes.addressof(self._struct), self._name, None)


_borrow_capsule = _BorrowCapsule()


class IreeBinding:
    """One IREE device (its ``LayerNormKernels``) serving one torch device, how
    calls are ordered with torch's work, and the weights imported so far."""

    # Imported [N] vectors kept: a few per LayerNorm in a model.
    VECTOR_CACHE_SIZE = 256
    # Borrowed imports kept: the activations, gradients and statistics of the
    # LayerNorms of a model, at the addresses torch's allocator gives them each step.
    BORROWED_CACHE_SIZE = 4096

    def __init__(self, kernels: LayerNormKernels, ordering):
        self.kernels = kernels
        self.ordering = ordering
        self._vectors = RecentlyUsed(self.VECTOR_CACHE_SIZE)
        self._borrowed = RecentlyUsed(self.BORROWED_CACHE_SIZE)
        self._kept_after_failure: list = []
        self._lock = threading.Lock()

    def array(self, tensor: torch.Tensor) -> ireert.DeviceArray:
        """A contiguous tensor's memory as an IREE array, without a copy. The
        import keeps ``tensor``'s storage alive until IREE releases it."""
        view = self.kernels.device.from_dlpack_capsule(torch.utils.dlpack.to_dlpack(tensor))
        return ireert.DeviceArray(self.kernels.device, view, implicit_host_transfer=True)

    def borrowed(self, tensor: torch.Tensor) -> ireert.DeviceArray:
        """``array`` for a contiguous tensor that the caller holds until the call
        it is passed to has returned; the import does not own the memory and is
        reused for the next tensor at the same address with the same dtype and
        shape (in training, the same step's tensors of the next step).

        Why that is safe: with an ordering that waits for each call (``wait``),
        IREE reads and writes an import only during a call, while the caller
        holds the tensor; after it, the cached import is an address that is
        used again only for a live tensor occupying exactly that memory. Its
        release runs no torch code (so nothing waits for the GIL on IREE's
        completion thread, and no tensor outlives its last Python reference).
        Orderings that return before the work is done (HIP) get owning imports."""
        if not self.ordering.wait:
            return self.array(tensor)
        key = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
        array = self._borrowed.get(key)
        if array is None:
            with _borrow_capsule.lock:
                view = self.kernels.device.from_dlpack_capsule(_borrow_capsule.capsule(tensor))
            array = ireert.DeviceArray(self.kernels.device, view, implicit_host_transfer=True)
            self._borrowed.put(key, array)
        return array

    def call(self, run, tensors: tuple) -> None:
        """``run()``, one IREE call on borrowed imports of ``tensors``, between
        the ordering's ``before`` and ``after``. A call that raises after its
        work was (perhaps partly) queued, i.e. the runtime's timeline moved on
        or was replaced, may leave work on the device that still reads or
        writes ``tensors``; the imports do not own them, so they are kept for
        the life of the process and torch never gives their memory to
        another tensor. Calls rejected before queuing keep nothing."""
        kernels = self.kernels
        timeline, value = kernels.queued()
        self.ordering.before()
        try:
            run()
        except BaseException:
            timeline_after, value_after = kernels.queued()
            if timeline_after is not timeline or value_after != value:
                with self._lock:
                    self._kept_after_failure.append(tensors)
            raise
        self.ordering.after(kernels)

    def run(self, kernel: Kernel, entry_name: str, inputs: tuple, outputs: tuple, scalars: dict) -> None:
        """Entry ``entry_name`` of ``kernel`` on the tensors ``inputs`` (in its
        kernel shapes: [M, N], [N], [M]) into ``outputs``, with ``scalars``
        (name -> value) already checked (``check_eps``): the one launcher
        interface that ``DirectBinding`` also implements."""
        entry = kernel.entry(entry_name)
        arrays = tuple(self.vector(t) if arg.role is Role.COLUMNS else self.borrowed(t)
                       for arg, t in zip(entry.inputs, inputs))
        out = tuple(self.borrowed(t) for t in outputs)
        values = tuple(scalars[name] for name in entry.scalars)
        self.call(lambda: self.kernels.call_checked(kernel, entry_name, arrays, values, out=out, wait=self.ordering.wait),
                  inputs + outputs)

    def vector(self, tensor: torch.Tensor) -> ireert.DeviceArray:
        """``array`` for a weight or bias, imported once. An import is the
        address range it was made from; the entry keeps ``tensor`` (so its
        storage) alive, so no other tensor can be given that range while the
        entry exists, and a tensor with the same address, dtype and length is
        the same memory. In-place updates (optimizer steps) are seen by
        every call, since the kernel reads the memory when it runs."""
        key = (tensor.data_ptr(), tensor.dtype, tensor.numel())
        entry = self._vectors.get(key)
        if entry is None:
            entry = (tensor, self.array(tensor))
            self._vectors.put(key, entry)
        return entry[1]


class DirectBinding:
    """cuda:N without IREE's runtime: each call's kernels launched from the
    artifact's launch plan on torch's current stream (``DirectRunner``; PTX
    through the CUDA driver API, or HSACO through HIP's on ROCm builds).
    Outputs and scratch come from torch's caching allocator on that stream,
    nothing is waited for on the host, and graphs capture the launches."""

    def __init__(self, torch_device: torch.device, static_shapes: bool | None = None):
        self.torch_device = torch_device
        self.index = torch_device.index
        if torch.version.hip:
            target = target_for("hip", torch.cuda.get_device_properties(self.index).gcnArchName.split(":")[0])
        else:
            target = target_for("cuda")
        self.runner = DirectRunner(self.index, target, static_shapes)

    def _scratch(self, nbytes: int) -> torch.Tensor:
        # Freed when the call returns, reused only by work queued after its kernels.
        return torch.empty(nbytes, dtype=torch.uint8, device=self.torch_device)

    def run(self, kernel: Kernel, entry_name: str, inputs: tuple, outputs: tuple, scalars: dict) -> None:
        """As ``IreeBinding.run``, queued on torch's current stream of the device."""
        self.runner.run(kernel, entry_name, _DTYPES[inputs[0].dtype].name, inputs, outputs, scalars, self._scratch,
                        torch._C._cuda_getCurrentRawStream(self.index))


_bindings: dict = {}
_bindings_lock = threading.Lock()
# Release IREE devices and modules before interpreter teardown, not during it.
atexit.register(_bindings.clear)
# The parent's bindings in a forked child: kept, never used or freed (their
# devices' threads did not survive the fork; see runtime.ABANDONED_AFTER_FORK).
_abandoned_after_fork: list = []


def _forget_bindings_after_fork() -> None:
    _abandoned_after_fork.append(dict(_bindings))
    _bindings.clear()
    global _bindings_lock
    _bindings_lock = threading.Lock()  # it may have been held by another thread at the fork


os.register_at_fork(after_in_child=_forget_bindings_after_fork)


def _hip_runtime():
    return ctypes.CDLL("libamdhip64.so")


def _iree_device_info(driver: ireert.HalDriver, driver_name: str, index: int) -> dict:
    """The IREE device of ``driver`` that is torch's ``cuda:index``: matched by
    UUID (IREE's device path is "GPU-<uuid>"), else by ordinal, which both
    runtimes number alike under the same *_VISIBLE_DEVICES."""
    infos = driver.query_available_devices()
    uuid = str(torch.cuda.get_device_properties(index).uuid)
    for info in infos:
        if str(info.get("path", "")).removeprefix("GPU-") == uuid:
            return info
    if index < len(infos):
        return infos[index]
    raise RuntimeError(
        f"torch's cuda:{index} (uuid {uuid}) has no IREE {driver_name!r} device: IREE lists "
        f"{[info.get('path') for info in infos]}"
    )


def _open_gpu(torch_device: torch.device) -> IreeBinding:
    index = torch_device.index if torch_device.index is not None else torch.cuda.current_device()
    if torch.version.hip:
        stream = torch.cuda.current_stream(index).cuda_stream
        driver = ireert.get_driver("hip")
        info = _iree_device_info(driver, "hip", index)
        hal_device = driver.create_device(info, hip_device_params(stream))
        chip = torch.cuda.get_device_properties(index).gcnArchName.split(":")[0]
        kernels = LayerNormKernels("hip", chip=chip, hal_device=hal_device)
        return IreeBinding(kernels, HipStreamOrdering(stream, _hip_runtime()))
    driver = ireert.get_driver("cuda")
    hal_device = driver.create_device(_iree_device_info(driver, "cuda", index), {})
    return IreeBinding(LayerNormKernels("cuda", hal_device=hal_device), HostOrdering(torch.device("cuda", index)))


def binding_for(torch_device: torch.device) -> IreeBinding | DirectBinding:
    """The cached binding of a torch device (and, through IREE's hip driver, its current stream)."""
    if torch_device.type == "cpu":
        key = ("cpu",)
    elif torch_device.type == "cuda":
        index = torch_device.index if torch_device.index is not None else torch.cuda.current_device()
        per_stream = torch.version.hip and GPU_PATH == "iree"
        key = ("cuda", index, torch.cuda.current_stream(index).cuda_stream if per_stream else None)
    else:
        raise NotImplementedError(f"lnbwd_iree.torch runs on CPU and CUDA/ROCm tensors, got a {torch_device} tensor")
    binding = _bindings.get(key)
    if binding is None:
        with _bindings_lock:
            binding = _bindings.get(key)
            if binding is None:
                if key[0] == "cpu":
                    binding = IreeBinding(kernels_for("local-task"), HostOrdering(torch_device))
                elif GPU_PATH == "direct":
                    binding = DirectBinding(torch.device("cuda", key[1]))
                else:
                    binding = _open_gpu(torch_device)
                _bindings[key] = binding
    return binding


def _check_inputs(x: torch.Tensor, vectors: dict) -> int:
    """N (x's last dim), after checking the dtype and each [N] vector's shape and device."""
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"x has unsupported dtype {x.dtype}; expected float32, float16, bfloat16 or (CPU) float64")
    if x.dim() == 0:
        raise ValueError("x must have at least one dim (LayerNorm normalises the last)")
    n = x.shape[-1]
    for name, tensor in vectors.items():
        if tensor is None:
            continue
        if tensor.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) to match the last dim of x, got {tuple(tensor.shape)}")
        if tensor.device != x.device:
            raise ValueError(f"{name} is on {tensor.device} but x is on {x.device}")
        if tensor.dtype not in SUPPORTED_DTYPES:
            raise TypeError(f"{name} has unsupported dtype {tensor.dtype}")
    return n


_constants: dict = {}


def _parameter(tensor: torch.Tensor | None, n: int, x: torch.Tensor, fill: float) -> torch.Tensor:
    """A weight or bias as the kernel takes it: contiguous, in x's dtype (the
    kernel has one storage type; torch allows e.g. bf16 x with f32 weight), or
    ``fill`` (made once per device) where there is none."""
    if tensor is None:
        key = (x.device, n, x.dtype, fill)
        constant = _constants.get(key)
        if constant is None:
            constant = _constants[key] = torch.full((n,), fill, dtype=x.dtype, device=x.device)
        return constant
    return tensor.to(x.dtype).contiguous()


def _aligned(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (contiguous) where its memory is ALIGNMENT-aligned, else a copy that is:
    views at an offset (slices, autograd's gradients of cat/split) are taken as torch takes them."""
    return tensor if tensor.data_ptr() % ALIGNMENT == 0 else tensor.clone()


def _run(kernel: Kernel, entry_name: str, inputs: tuple, outputs: tuple, **scalars) -> None:
    """Entry ``entry_name`` of ``kernel`` on x's device (x: the first input), through its binding;
    ``scalars`` (eps) were checked by the caller (``check_eps``, once per call)."""
    binding = binding_for(inputs[0].device)
    binding.run(kernel, entry_name, tuple(_aligned(t) for t in inputs), outputs, scalars)


def _forward_kernel(x, weight, bias, eps):
    """layer_norm_fwd's implementation: the IREE forward on x's device."""
    n = _check_inputs(x, {"weight": weight, "bias": bias})
    x = x.contiguous()
    # Outputs before the ordering's synchronisation: see HostOrdering.
    y = torch.empty_like(x)
    mean = x.new_empty(x.shape[:-1], dtype=stats_dtype(x.dtype))
    rstd = x.new_empty(x.shape[:-1], dtype=stats_dtype(x.dtype))
    m = x.numel() // n
    if m == 0:
        return y, mean, rstd
    _run(LAYERNORM_FORWARD, "layernorm_forward",
         (x.view(m, n), _parameter(weight, n, x, 1.0), _parameter(bias, n, x, 0.0)),
         (y.view(m, n), mean.view(m), rstd.view(m)), eps=eps)
    return y, mean, rstd


@torch.library.custom_op("lnbwd_iree::layer_norm_fwd", mutates_args=(), tags=_OP_TAGS)
def layer_norm_fwd(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean, rstd) of layer_norm over the last dim of ``x``; mean and rstd
    have x's leading dims, in f32 (f64 for f64 data). ``weight``/``bias``
    ([N] or None) may have another floating dtype than x, as in torch."""
    return _forward_kernel(x, weight, bias, check_eps(eps))


@layer_norm_fwd.register_fake
def _(x, weight, bias, eps):
    _check_inputs(x, {"weight": weight, "bias": bias})
    stats = stats_dtype(x.dtype)
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(x.shape[:-1], dtype=stats), x.new_empty(x.shape[:-1], dtype=stats)


def _check_backward_inputs(dy, x, weight) -> tuple[int, int, torch.dtype]:
    """(N, M, the parameter gradients' dtype: weight's, or x's without one) of a backward call."""
    n = _check_inputs(x, {"weight": weight})
    if dy.shape != x.shape:
        raise ValueError(f"dy has shape {tuple(dy.shape)} but x has {tuple(x.shape)}")
    return n, x.numel() // n, weight.dtype if weight is not None else x.dtype


def _backward_kernel(dy, x, weight, mean, rstd):
    """layer_norm_bwd's implementation: the IREE backward on x's device."""
    n, m, grad_dtype = _check_backward_inputs(dy, x, weight)
    if m == 0:
        # torch's convention for an empty batch: no rows, zero parameter grads.
        return torch.empty_like(x), x.new_zeros(n, dtype=grad_dtype), x.new_zeros(n, dtype=grad_dtype)
    dy, x = dy.to(x.dtype).contiguous(), x.contiguous()
    mean, rstd = mean.contiguous(), rstd.contiguous()
    dx = torch.empty_like(x)
    dweight, dbias = x.new_empty(n), x.new_empty(n)
    _run(LAYERNORM_BACKWARD, "layernorm_backward",
         (dy.view(m, n), x.view(m, n), _parameter(weight, n, x, 1.0), mean.view(m), rstd.view(m)),
         (dx.view(m, n), dweight, dbias))
    return dx, dweight.to(grad_dtype), dbias.to(grad_dtype)


@torch.library.custom_op("lnbwd_iree::layer_norm_bwd", mutates_args=(), tags=_OP_TAGS)
def layer_norm_bwd(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, mean: torch.Tensor, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias) from the forward's mean and rstd. dweight and dbias
    have weight's dtype (x's when there is no weight)."""
    return _backward_kernel(dy, x, weight, mean, rstd)


@layer_norm_bwd.register_fake
def _(dy, x, weight, mean, rstd):
    n = _check_inputs(x, {"weight": weight})
    grad_dtype = weight.dtype if weight is not None else x.dtype
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(n, dtype=grad_dtype), x.new_empty(n, dtype=grad_dtype)


def _setup_context(ctx, inputs, output):
    x, weight, bias, _ = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, bias, mean, rstd)
    ctx.mark_non_differentiable(mean, rstd)


def _gradients(dy, x, weight, bias, mean, rstd, backward_kernel):
    """(dx, dweight, dbias) for autograd; None for a missing weight or bias."""
    if torch.is_grad_enabled():
        # create_graph: the backward must itself be differentiable (double
        # backward), which the IREE kernel is not; aten's layer_norm backward
        # is, and accounts for mean and rstd depending on x.
        n = x.shape[-1]
        dx, dweight, dbias = torch.ops.aten.native_layer_norm_backward(
            dy, x, [n], mean.unsqueeze(-1), rstd.unsqueeze(-1), weight, bias,
            [True, weight is not None, bias is not None],
        )
    else:
        dx, dweight, dbias = backward_kernel(dy, x, weight, mean, rstd)
    return dx, dweight if weight is not None else None, dbias if bias is not None else None


def _backward(ctx, dy, _dmean, _drstd):
    return (*_gradients(dy, *ctx.saved_tensors, layer_norm_bwd), None)


layer_norm_fwd.register_autograd(_backward, setup_context=_setup_context)
# CUDA autocast runs torch's layer_norm in f32 (input cast, f32 output); CPU
# autocast leaves layer_norm in the input's dtype, as does an unregistered op.
torch.library.register_autocast("lnbwd_iree::layer_norm_fwd", "cuda", torch.float32)


# ---- torch.func.vmap: the vmapped dim becomes one more leading (row) dim of one call -------------


def _batch_first(info, tensor, dim):
    """``tensor`` with the vmapped dim first, expanded to the batch where it has none."""
    return tensor.movedim(dim, 0) if dim is not None else tensor.expand(info.batch_size, *tensor.shape)


def _per_example(vector, dim, rows):
    """A vmapped [N] weight or bias ([B, N] once its dim is first) shaped to broadcast over ``rows`` [B, ..., N]."""
    vector = vector.movedim(dim, 0)
    return vector.reshape(vector.shape[0], *(1,) * (rows.dim() - 2), vector.shape[-1])


def _column_sums(rows):
    """Per-example sums over the rows of [B, ..., N]: [B, N]."""
    return rows.reshape(rows.shape[0], -1, rows.shape[-1]).sum(1)


@layer_norm_fwd.register_vmap
def _(info, in_dims, x, weight, bias, eps):
    x_dim, weight_dim, bias_dim, _ = in_dims
    x = _batch_first(info, x, x_dim)
    if weight_dim is None and bias_dim is None:
        return layer_norm_fwd(x, weight, bias, eps), (0, 0, 0)
    # A weight or bias per example (model ensembles): normalise in one call, then scale and shift each example.
    y, mean, rstd = layer_norm_fwd(x, None, None, eps)
    scaled = y if weight is None else y * (weight if weight_dim is None else _per_example(weight, weight_dim, y))
    shifted = scaled if bias is None else scaled + (bias if bias_dim is None else _per_example(bias, bias_dim, y))
    return (shifted.to(x.dtype), mean, rstd), (0, 0, 0)


@layer_norm_bwd.register_vmap
def _(info, in_dims, dy, x, weight, mean, rstd):
    dy_dim, x_dim, weight_dim, mean_dim, rstd_dim = in_dims
    dy, x = _batch_first(info, dy, dy_dim), _batch_first(info, x, x_dim)
    mean, rstd = _batch_first(info, mean, mean_dim), _batch_first(info, rstd, rstd_dim)
    if weight_dim is None:
        dx = layer_norm_bwd(dy, x, weight, mean, rstd)[0]
    else:  # dx of a per-example weight w is the weightless one of dy * w
        dx = layer_norm_bwd(dy * _per_example(weight, weight_dim, dy), x, None, mean, rstd)[0]
    # The kernel's column sums run over every example's rows: per example in torch ops.
    grad_dtype = weight.dtype if weight is not None else x.dtype
    x_hat = (x - mean.unsqueeze(-1)) * rstd.unsqueeze(-1)
    dweight, dbias = _column_sums(dy * x_hat).to(grad_dtype), _column_sums(dy.to(rstd.dtype)).to(grad_dtype)
    return (dx, dweight, dbias), (0, 0, 0)


def _no_forward_mode(ctx, *tangents):
    # autograd.Function.jvp: forward-mode AD (torch.autograd.forward_ad dual tensors).
    raise RuntimeError(
        "lnbwd_iree.torch's LayerNorm and RMSNorm have no forward-mode AD (dual tensors, jvp); use "
        "torch.nn.functional.layer_norm / rms_norm where tangents are needed."
    )


class _EagerLayerNorm(torch.autograd.Function):
    """The custom ops' forward and backward without torch's dispatch of
    Python custom ops, which costs more than the IREE call on small shapes;
    used in plain eager mode only (see ``_plain_eager``). ``layer_norm``
    applies the ops' CUDA autocast rule (f32 inputs) before it: no op inside
    is one that autocast changes, and torch.amp.custom_fwd's per-call cost is
    a tenth of a small shape's step."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        y, mean, rstd = _forward_kernel(x, weight, bias, eps)
        ctx.save_for_backward(x, weight, bias, mean, rstd)
        return y

    @staticmethod
    def backward(ctx, dy):
        return (*_gradients(dy, *ctx.saved_tensors, _backward_kernel), None)

    jvp = staticmethod(_no_forward_mode)


def _plain_eager(*tensors) -> bool:
    """True outside torch.compile/export tracing, dispatch modes, tensor
    subclasses (fake, functional, DTensor), torch.func transforms and meta
    tensors, where the custom ops must be used (their fake kernels serve meta
    tensors, their vmap rules torch.func.vmap)."""
    if torch.compiler.is_compiling() or _get_current_dispatch_mode() is not None:
        return False
    if torch._C._are_functorch_transforms_active():
        return False
    return all(t is None or ((type(t) is torch.Tensor or type(t) is torch.nn.Parameter) and not t.is_meta)
               for t in tensors)


def _refuse_autodiff_transforms(function: str) -> None:
    """torch.func's autodiff transforms cannot go through the custom ops in
    torch 2.13: grad (vjp, jacrev, hessian) refuses their generated
    autograd.Function (it has no setup_context), and jvp (jacfwd) would give
    zero tangents without a word. vmap is supported (the ops' vmap rules)."""
    if torch.compiler.is_compiling():  # dynamo cannot trace the interpreter stack, and handles torch.func itself
        return
    transforms = {interpreter.key() for interpreter in torch._C._functorch.get_interpreter_stack() or ()}
    if transforms & {TransformType.Grad, TransformType.Jvp}:
        raise RuntimeError(
            f"lnbwd_iree.torch.{function} does not support torch.func.grad, vjp, jvp, jacrev, jacfwd or hessian "
            "(torch 2.13's custom ops cannot take part in them; only torch.func.vmap is supported). For gradients "
            f"use .backward() or torch.autograd.grad, which run our backward; inside torch.func transforms use "
            f"torch.nn.functional.{function}."
        )


def _rows(function: str, x: torch.Tensor, normalized_shape) -> tuple[torch.Tensor, int]:
    """``x`` as rows [..., N] over its trailing ``normalized_shape`` dims, and N:
    ``x`` itself over one dim (a view would add an autograd node per call)."""
    if isinstance(normalized_shape, numbers.Integral):
        normalized_shape = (normalized_shape,)
    normalized_shape = tuple(normalized_shape)
    k = len(normalized_shape)
    if k == 0 or x.dim() < k or tuple(x.shape[x.dim() - k:]) != normalized_shape:
        raise ValueError(
            f"{function} over normalized_shape {normalized_shape} needs an input whose last {k} dims are "
            f"{normalized_shape}, got shape {tuple(x.shape)}"
        )
    if k == 1:
        return x, normalized_shape[0]
    n = math.prod(normalized_shape)
    return x.reshape(*x.shape[: x.dim() - k], n), n


def _vector(tensor: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """A weight or bias of normalized_shape as [N]."""
    return tensor if tensor is None or tensor.dim() == 1 else tensor.reshape(n)


def _autocast(*tensors):
    """The tensors as CUDA autocast gives them to torch's layer_norm (f32), or as they are outside it."""
    if tensors[0].is_cuda and torch.is_autocast_enabled("cuda"):
        return tuple(t if t is None or not t.is_floating_point() else t.float() for t in tensors)
    return tensors


def layer_norm(x: torch.Tensor, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> torch.Tensor:
    """``torch.nn.functional.layer_norm`` with the IREE kernels."""
    flat, n = _rows("layer_norm", x, normalized_shape)
    weight, bias = _vector(weight, n), _vector(bias, n)
    eps = check_eps(eps)
    if _plain_eager(flat, weight, bias):
        y = _EagerLayerNorm.apply(*_autocast(flat, weight, bias), eps)
    else:
        _refuse_autodiff_transforms("layer_norm")
        y = layer_norm_fwd(flat, weight, bias, eps)[0]
    return y if flat is x else y.reshape(x.shape)


class _Normalization(torch.nn.Module):
    """The arguments, parameters and repr that torch's LayerNorm and RMSNorm share.
    ``parameters``: name -> initial value, or None for one registered as absent."""

    def __init__(self, normalized_shape, eps, elementwise_affine, parameters: dict, device, dtype):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self._initial_values = {name: value for name, value in parameters.items() if value is not None}
        for name, value in parameters.items():
            present = elementwise_affine and value is not None
            tensor = torch.empty(self.normalized_shape, device=device, dtype=dtype) if present else None
            self.register_parameter(name, torch.nn.Parameter(tensor) if present else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The parameters' initial values (as torch's modules: after ``to_empty``
        of a module built on the meta device, for one)."""
        with torch.no_grad():
            for name, value in self._initial_values.items():
                parameter = getattr(self, name)
                if parameter is not None:
                    parameter.fill_(value)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"

    def __prepare_scriptable__(self):
        # torch.jit.script calls this on each module it scripts (submodules
        # too) before compiling forward, which TorchScript cannot: without it
        # the failure is deep in TorchScript's frontend and names nothing of ours.
        raise RuntimeError(
            f"lnbwd_iree.torch.{type(self).__name__} cannot be compiled by TorchScript (torch.jit.script): its "
            "forward runs the IREE kernels from Python. Use torch.compile or torch.export instead, which keep it "
            "as one custom op."
        )


class LayerNorm(_Normalization):
    """Drop-in for ``torch.nn.LayerNorm`` (same arguments and state_dict keys)."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__(normalized_shape, eps, elementwise_affine, {"weight": 1.0, "bias": 0.0 if bias else None},
                         device, dtype)

    def forward(self, x):
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


# ---- RMSNorm: the same custom-op form as LayerNorm's --------------------------------------------


def _rms_norm_forward_kernel(x, weight, eps):
    """rms_norm_fwd's implementation: the IREE forward on x's device."""
    n = _check_inputs(x, {"weight": weight})
    x = x.contiguous()
    # Outputs before the ordering's synchronisation: see HostOrdering.
    y = torch.empty_like(x)
    rstd = x.new_empty(x.shape[:-1], dtype=stats_dtype(x.dtype))
    m = x.numel() // n
    if m == 0:
        return y, rstd
    _run(RMSNORM_FORWARD, "rmsnorm_forward", (x.view(m, n), _parameter(weight, n, x, 1.0)),
         (y.view(m, n), rstd.view(m)), eps=eps)
    return y, rstd


@torch.library.custom_op("lnbwd_iree::rms_norm_fwd", mutates_args=(), tags=_OP_TAGS)
def rms_norm_fwd(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, rstd) of rms_norm over the last dim of ``x``; rstd = 1/sqrt(mean(x^2) + eps)
    has x's leading dims, in f32 (f64 for f64 data). ``weight`` ([N] or None)
    may have another floating dtype than x."""
    return _rms_norm_forward_kernel(x, weight, check_eps(eps))


@rms_norm_fwd.register_fake
def _(x, weight, eps):
    _check_inputs(x, {"weight": weight})
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(x.shape[:-1], dtype=stats_dtype(x.dtype))


def _rms_norm_backward_kernel(dy, x, weight, rstd):
    """rms_norm_bwd's implementation: the IREE backward on x's device."""
    n, m, grad_dtype = _check_backward_inputs(dy, x, weight)
    if m == 0:
        # torch's convention for an empty batch: no rows, a zero weight grad.
        return torch.empty_like(x), x.new_zeros(n, dtype=grad_dtype)
    dy, x, rstd = dy.to(x.dtype).contiguous(), x.contiguous(), rstd.contiguous()
    dx, dweight = torch.empty_like(x), x.new_empty(n)
    _run(RMSNORM_BACKWARD, "rmsnorm_backward",
         (dy.view(m, n), x.view(m, n), _parameter(weight, n, x, 1.0), rstd.view(m)), (dx.view(m, n), dweight))
    return dx, dweight.to(grad_dtype)


@torch.library.custom_op("lnbwd_iree::rms_norm_bwd", mutates_args=(), tags=_OP_TAGS)
def rms_norm_bwd(
    dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, rstd: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dx, dweight) from the forward's rstd; dweight has weight's dtype (x's when there is none)."""
    return _rms_norm_backward_kernel(dy, x, weight, rstd)


@rms_norm_bwd.register_fake
def _(dy, x, weight, rstd):
    n = _check_inputs(x, {"weight": weight})
    grad_dtype = weight.dtype if weight is not None else x.dtype
    return torch.empty_like(x, memory_format=torch.contiguous_format), x.new_empty(n, dtype=grad_dtype)


def _rms_setup_context(ctx, inputs, output):
    x, weight, eps = inputs
    ctx.save_for_backward(x, weight, output[1])
    ctx.mark_non_differentiable(output[1])
    ctx.eps = eps


def _rms_gradients(dy, x, weight, rstd, eps, backward_kernel):
    """(dx, dweight) for autograd; None for a missing weight."""
    if torch.is_grad_enabled():
        # create_graph: the backward must itself be differentiable (double
        # backward), which the IREE kernel is not; this one is written in torch
        # ops, with rstd recomputed from x so that its dependence on x is seen.
        rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        x_hat = x * rstd
        g = dy * weight if weight is not None else dy
        dx = rstd * (g - x_hat * (g * x_hat).mean(-1, keepdim=True))
        dweight = (dy * x_hat).reshape(-1, x.shape[-1]).sum(0) if weight is not None else None
        return dx, dweight
    dx, dweight = backward_kernel(dy, x, weight, rstd)
    return dx, dweight if weight is not None else None


def _rms_backward(ctx, dy, _drstd):
    return (*_rms_gradients(dy, *ctx.saved_tensors, ctx.eps, rms_norm_bwd), None)


rms_norm_fwd.register_autograd(_rms_backward, setup_context=_rms_setup_context)


@rms_norm_fwd.register_vmap
def _(info, in_dims, x, weight, eps):
    x_dim, weight_dim, _ = in_dims
    x = _batch_first(info, x, x_dim)
    if weight_dim is None:
        return rms_norm_fwd(x, weight, eps), (0, 0)
    y, rstd = rms_norm_fwd(x, None, eps)
    return ((y * _per_example(weight, weight_dim, y)).to(x.dtype), rstd), (0, 0)


@rms_norm_bwd.register_vmap
def _(info, in_dims, dy, x, weight, rstd):
    dy_dim, x_dim, weight_dim, rstd_dim = in_dims
    dy, x, rstd = _batch_first(info, dy, dy_dim), _batch_first(info, x, x_dim), _batch_first(info, rstd, rstd_dim)
    if weight_dim is None:
        dx = rms_norm_bwd(dy, x, weight, rstd)[0]
    else:
        dx = rms_norm_bwd(dy * _per_example(weight, weight_dim, dy), x, None, rstd)[0]
    grad_dtype = weight.dtype if weight is not None else x.dtype
    return (dx, _column_sums(dy * x * rstd.unsqueeze(-1)).to(grad_dtype)), (0, 0)


class _EagerRMSNorm(torch.autograd.Function):
    """rms_norm_fwd/rms_norm_bwd without torch's dispatch of Python custom ops,
    in plain eager mode only (as ``_EagerLayerNorm``)."""

    @staticmethod
    def forward(ctx, x, weight, eps):
        y, rstd = _rms_norm_forward_kernel(x, weight, eps)
        ctx.save_for_backward(x, weight, rstd)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, dy):
        return (*_rms_gradients(dy, *ctx.saved_tensors, ctx.eps, _rms_norm_backward_kernel), None)

    jvp = staticmethod(_no_forward_mode)


def rms_norm(x: torch.Tensor, normalized_shape, weight=None, eps: float | None = None) -> torch.Tensor:
    """``torch.nn.functional.rms_norm`` with the IREE kernels; ``eps=None`` is
    torch's default, the epsilon of the arithmetic (opmath) type:
    ``torch.finfo(torch.float32).eps`` for f16, bf16 and f32, float64's for f64."""
    flat, n = _rows("rms_norm", x, normalized_shape)
    if eps is None:
        _check_inputs(flat, {})  # stats_dtype needs a supported dtype
        eps = torch.finfo(stats_dtype(x.dtype)).eps
    weight = _vector(weight, n)
    eps = check_eps(eps)
    if _plain_eager(flat, weight):
        y = _EagerRMSNorm.apply(flat, weight, eps)
    else:
        _refuse_autodiff_transforms("rms_norm")
        y = rms_norm_fwd(flat, weight, eps)[0]
    return y if flat is x else y.reshape(x.shape)


class RMSNorm(_Normalization):
    """Drop-in for ``torch.nn.RMSNorm`` (same arguments and state_dict keys)."""

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
        super().__init__(normalized_shape, eps, elementwise_affine, {"weight": 1.0}, device, dtype)

    def forward(self, x):
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)
