"""Runs the compiled kernels on one IREE device, keeping data on the device.

``LayerNormKernels(device)`` opens the device once, loads each artifact once
(one VM context per module, all sharing the device's HAL module) and takes and
returns ``iree.runtime.DeviceArray``s, so a training loop makes no host round
trip. NumPy inputs are uploaded; call ``.to_host()`` on results to read them."""

from __future__ import annotations

import atexit
import ctypes
import functools
import logging
import numbers
import os
import threading
import weakref
from dataclasses import dataclass

import ml_dtypes
import numpy as np
from iree import runtime as ireert

from . import compiler
from .cache import ArtifactStore, artifact_name
from .dtypes import NUMPY_DTYPES, STATS_DTYPES, STORAGE_DTYPES
from .recent import SHAPES_KEPT, RecentlyUsed
from .kernels import LAYERNORM_BACKWARD, LAYERNORM_FORWARD, RMSNORM_BACKWARD, RMSNORM_FORWARD
from .specialization import Entry, Kernel, Role, Specialization
from .targets import DRIVERS, target_for

log = logging.getLogger("lnbwd_iree")

__all__ = ["NUMPY_DTYPES", "STATS_DTYPES", "STORAGE_DTYPES", "LayerNormKernels", "check_eps", "check_problem"]


def open_device(driver: str) -> ireert.HalDevice:
    """The first device of ``driver``, with an error that names what is missing."""
    if driver not in DRIVERS:
        raise ValueError(f"unknown device {driver!r}; expected one of {sorted(DRIVERS)}")
    if driver not in ireert.query_available_drivers():
        raise RuntimeError(f"this iree-base-runtime build has no {driver!r} driver")
    try:
        devices = ireert.get_driver(driver).query_available_devices()
    except (RuntimeError, ValueError) as e:  # the runtime raises either for a missing library
        raise RuntimeError(f"device {driver!r}: its driver could not start ({e})") from e
    if not devices:
        raise RuntimeError(f"device {driver!r}: the driver is present but found no device")
    return ireert.get_device(driver)


_ELEMENT_DTYPES = {
    ireert.HalElementType.FLOAT_64: np.dtype(np.float64),
    ireert.HalElementType.FLOAT_32: np.dtype(np.float32),
    ireert.HalElementType.FLOAT_16: np.dtype(np.float16),
    ireert.HalElementType.BFLOAT_16: np.dtype(ml_dtypes.bfloat16),
}


def shape_and_dtype(array) -> tuple[tuple[int, ...], np.dtype]:
    """An array's shape and dtype; a DeviceArray's read from its buffer view
    (DeviceArray.shape and .dtype go through NumPy dispatch and type mapping,
    which showed in profiles of small calls)."""
    if isinstance(array, ireert.DeviceArray):
        view = array._buffer_view
        element_type = view.element_type
        if element_type in _ELEMENT_DTYPES:
            return tuple(view.shape), _ELEMENT_DTYPES[element_type]
        return tuple(view.shape), np.dtype(ireert.HalElementType.map_to_dtype(element_type))
    return tuple(int(d) for d in array.shape), np.dtype(array.dtype)


def storage_dtype(name: str, dtype: np.dtype) -> str:
    if dtype not in NUMPY_DTYPES:
        raise TypeError(
            f"{name} has dtype {dtype}; supported are float32, float16, bfloat16 (ml_dtypes.bfloat16)"
            " and, on CPUs, float64"
        )
    return NUMPY_DTYPES[dtype]


@dataclass(frozen=True)
class Problem:
    """A validated call: the storage dtype and the [M, N] view of the inputs."""

    dtype: str
    m: int
    n: int
    batch_shape: tuple[int, ...]  # leading dims of X, flattened into M

    @property
    def shape(self) -> tuple[int, ...]:
        return (*self.batch_shape, self.n)


def check_problem(rows: dict, vectors_n: dict, vectors_m: dict) -> Problem:
    """Validates shapes and dtypes. ``rows``: name -> [..., N] arrays that must
    agree; ``vectors_n``: name -> [N] arrays; ``vectors_m``: name -> f32 stats, one per row."""
    return _check_signature(*(tuple((name, *shape_and_dtype(a)) for name, a in group.items())
                              for group in (rows, vectors_n, vectors_m)))


@functools.lru_cache(maxsize=256)
def _check_signature(rows, vectors_n, vectors_m) -> Problem:
    """check_problem on (name, shape, dtype) triples; a training loop repeats
    the same few signatures, so each is validated once."""
    rows = {name: (shape, dtype) for name, shape, dtype in rows}
    vectors_n = {name: (shape, dtype) for name, shape, dtype in vectors_n}
    vectors_m = {name: (shape, dtype) for name, shape, dtype in vectors_m}
    (first_name, (shape, first_dtype)), *others = rows.items()
    # A 1-D [N] is one row with statistics of shape (), as torch takes it.
    if len(shape) < 1:
        raise ValueError(f"{first_name} must have at least 1 dim [..., N], got shape {shape}")
    batch_shape, n = shape[:-1], shape[-1]
    if n == 0:
        raise ValueError(f"{first_name} has N == 0 (last dim): normalising an empty row is undefined")
    m = 1
    for d in batch_shape:
        m *= d
    dtype = storage_dtype(first_name, first_dtype)
    for name, (other_shape, _) in others:
        if other_shape != shape:
            raise ValueError(f"{name} has shape {other_shape} but {first_name} has {shape}")
    for name, (_, other_dtype) in [*others, *vectors_n.items()]:
        if storage_dtype(name, other_dtype) != dtype:
            raise TypeError(f"{name} has dtype {other_dtype} but {first_name} has {first_dtype}")
    for name, (vector_shape, _) in vectors_n.items():
        if vector_shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) to match the last dim of {first_name}, got {vector_shape}")
    for name, (stats_shape, stats_dtype) in vectors_m.items():
        if stats_dtype != STATS_DTYPES[dtype]:
            raise TypeError(f"{name} must be {STATS_DTYPES[dtype]} (the statistics of {dtype} data), got {stats_dtype}")
        if stats_shape not in (batch_shape, (*batch_shape, 1), (m,)):
            raise ValueError(
                f"{name} must have shape {batch_shape} (one value per row of {first_name}), got {stats_shape}"
            )
    return Problem(dtype, m, n, batch_shape)


# The kernels take eps as an f32 argument (converted to the arithmetic type
# inside), for every storage dtype: a larger eps would arrive as inf.
EPS_MAX = float(np.finfo(np.float32).max)


def check_eps(eps) -> float:
    # float() alone would take "1e-5" and True, and say nothing of eps for None.
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number (int or float), got {type(eps).__name__} {eps!r}")
    eps = float(eps)
    if not 0.0 <= eps <= EPS_MAX:  # also false for NaN
        raise ValueError(f"eps must be a number in [0, {EPS_MAX:.8g}] (the kernels take it as float32), got {eps}")
    return eps


class DLTensor(ctypes.Structure):
    """DLPack's DLTensor (dlpack.h; DLDevice and DLDataType inlined), the
    first member of a DLManagedTensor."""

    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device_type", ctypes.c_int32),
        ("device_id", ctypes.c_int32),
        ("ndim", ctypes.c_int32),
        ("code", ctypes.c_uint8),
        ("bits", ctypes.c_uint8),
        ("lanes", ctypes.c_uint16),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


# A prototype of our own: setting restype on ctypes.pythonapi's shared one would change it for everyone.
_capsule_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi)
)
_SPAN_ATTRIBUTE = "_lnbwd_iree_memory_span"


def memory_span(device: ireert.HalDevice, array: ireert.DeviceArray) -> tuple:
    """(allocation, first byte, end byte) of ``array``'s memory, worked out
    once per array and kept on it. Where the driver exports the buffer's
    device address (the CPU drivers; cuda and hip for DLPack imports),
    allocation is None and the bytes are addresses, so separate imports of one
    torch storage compare by where they point. Elsewhere (e.g. buffers that
    cuda allocated itself) allocation is the HalBuffer, which views of it
    share, and the bytes count from its start. Not seen: two different IREE
    buffers over the same memory that IREE cannot export an address for."""
    span = array.__dict__.get(_SPAN_ATTRIBUTE)
    if span is None:
        view = array._buffer_view
        size = view.byte_length
        if size == 0:
            span = (None, 0, 0)  # overlaps nothing
        else:
            try:
                # Exported only to read the address: the device type code is not used.
                capsule = device.create_dlpack_capsule(view, 1, 0)
                tensor = DLTensor.from_address(_capsule_pointer(capsule, b"dltensor"))
                start = tensor.data + tensor.byte_offset
                span = (None, start, start + size)
            except (RuntimeError, ValueError):  # UNAVAILABLE, UNIMPLEMENTED, an element type DLPack lacks
                span = (view.get_buffer(), 0, size)
        array.__dict__[_SPAN_ATTRIBUTE] = span
    return span


def _same_allocation(a, b) -> bool:
    # HalBuffer.__eq__ compares the underlying buffers but refuses None.
    return a is b or (a is not None and b is not None and a == b)


def refuse_shared_memory(device: ireert.HalDevice, names: tuple, inputs, outputs) -> None:
    """Raises ValueError when a given output shares memory with an input or
    with another output: the kernels' arguments are noalias and dX is written
    before the column sums read dY and X. ``names``: (input labels, output
    labels); arrays that are not device arrays are skipped (host arrays are
    uploaded to fresh buffers). Runs on every call, so it stays lean."""
    input_names, output_names = names
    checked = None
    for name, array in zip(output_names, outputs):
        if type(array) is not ireert.DeviceArray:
            continue
        if checked is None:
            checked = [
                (other, memory_span(device, a))
                for other, a in zip(input_names, inputs)
                if type(a) is ireert.DeviceArray
            ]
        span = memory_span(device, array)
        allocation, start, end = span
        for other, (other_allocation, other_start, other_end) in checked:
            if start < other_end and other_start < end and _same_allocation(allocation, other_allocation):
                raise ValueError(
                    f"{name} shares memory with {other}; outputs must not overlap the inputs or each other"
                )
        checked.append((name, span))


def _is_healthy(semaphore: ireert.HalSemaphore) -> bool:
    try:
        semaphore.query()  # raises the failure of a failed semaphore
    except Exception:
        return False
    return True


@dataclass
class _Entry:
    """One loaded entry point and the scratch buffers its calls reuse."""

    context: ireert.VmContext
    function: ireert.VmFunction
    size_function: ireert.VmFunction | None
    transients: RecentlyUsed  # (M, N) -> HalBuffer


@dataclass(frozen=True)
class _Plan:
    """What a validated call signature resolves to, so that repeated calls with
    the same shapes and dtypes skip validation and artifact lookup."""

    entry: _Entry
    transients: ireert.HalBuffer
    # Per tensor input: the shape the kernel takes it in, or None where the
    # caller's device array already has that shape.
    input_views: tuple
    # Per output: (shape, dtype) the caller sees (allocated when not given),
    # and the kernel's shape or None.
    outputs: tuple


def _signature(name: str, arrays) -> tuple | None:
    """The key under which a call's plan is cached: the entry point and each
    array's element type and shape (None entries: inputs or outputs left out).
    None when an array is not a DeviceArray (host arrays are uploaded per call)."""
    key = [name]
    for array in arrays:
        if array is None:
            key.append(None)
        elif type(array) is ireert.DeviceArray:
            view = array._buffer_view
            key.append((view.element_type, *view.shape))
        else:
            return None
    return tuple(key)


def serving_specialization(store: ArtifactStore, target, static_shapes: bool | None, kernel: Kernel, dtype: str,
                           shape: tuple[int, int]) -> Specialization:
    """The artifact that serves ``kernel`` at ``shape`` [M, N] (``LayerNormKernels``'
    ``static_shapes`` rule): the shape-specialised one (``Specialization.serving``)
    where it is wanted and can be had, else the dynamic-shape one."""
    static, dynamic = Specialization.serving(kernel, dtype, *shape), Specialization(kernel, dtype)
    if static_shapes is None:
        if compiler.compiler_version() is not None or store.find(static, target):
            return static
        _report_dynamic_fallback(store, target, static)
        return dynamic
    return static if static_shapes else dynamic


_fallback_lock = threading.Lock()
_fallback_reported = False


def _report_dynamic_fallback(store: ArtifactStore, target, static: Specialization) -> None:
    """A runtime-only deployment serving a shape with the (slower) dynamic
    artifact: a warning, once per process (the first such shape; the reason
    and the remedy are the same for the others)."""
    global _fallback_reported
    with _fallback_lock:
        if _fallback_reported:
            return
        _fallback_reported = True
    shape = f"N={static.n}" if static.m is None else f"M={static.m} N={static.n}"
    searched = ", ".join(str(d) for d in (*store.artifact_dirs, store.cache_dir))
    log.warning(
        "%s %s: no %s artifact %s in %s and iree-base-compiler is not installed to build it, so the dynamic-shape "
        "artifact serves it (slower: 1.5x on CPUs, several times on GPUs); `lnbwd-iree compile --out DIR --target %s "
        "--dtype %s --shape MxN` builds specialised ones (pass artifact_dir=DIR). Said once: later shapes without "
        "theirs fall back the same way.",
        static.kernel.name, shape, static.kind, artifact_name(static, target), searched, target.name, static.dtype,
    )


# Every LayerNormKernels not yet garbage-collected.
_LIVE: weakref.WeakSet = weakref.WeakSet()
# After a fork, the parent's objects in the child: their devices' threads did
# not survive the fork, so closing or freeing them could wait forever. They are
# kept, unused, for the child's life.
ABANDONED_AFTER_FORK: list = []


def _forget_after_fork() -> None:
    ABANDONED_AFTER_FORK.extend(_LIVE)
    _LIVE.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


@atexit.register
def close_all() -> None:
    """Closes every LayerNormKernels, so that their devices and modules are
    released in order before interpreter teardown. Objects still referenced
    then (by a traceback, a global, an exception kept by torch) would
    otherwise be reported by nanobind as leaked at exit."""
    for kernels in list(_LIVE):
        kernels.close()


class LayerNormKernels:
    """The LayerNorm kernels bound to one device.

    ``device``: an IREE driver name (local-task, local-sync, cuda, hip, vulkan).
    ``chip``: GPU architecture for cuda/hip (default sm_80 / gfx942).
    ``backend``: "vmvx" runs the local drivers on IREE's portable VM backend.
    ``artifact_dir``: a folder made by ``lnbwd-iree compile --out``, searched
    before the cache; with it a deployment needs no compiler.
    ``static_shapes``: True uses an artifact specialised to each call's
    (M, N) (compiled on first use, a second or two), False the one
    dynamic-shape artifact; None (default) specialises whenever that artifact
    can be had (prebuilt, or the compiler is installed), else falls back to
    the dynamic one. Specialised artifacts are several times faster on GPUs
    and 1.5x on CPUs.
    ``hal_device``: an already-open device of driver ``device`` to run on
    instead of its first one (one GPU of several, or a HIP device created on
    an external stream).

    Calls are queued in order on one timeline semaphore (call k waits for
    value k and signals k + 1), so a call may use what an earlier call wrote
    even with ``wait=False``; each entry point's scratch (transient) buffer is
    therefore reused safely by the next call.

    An instance may be shared between threads: calls from several threads are
    queued one at a time, in the order they reach the queue. A call that fails
    leaves the queue usable for the calls after it.
    """

    def __init__(
        self,
        device: str = "local-task",
        *,
        chip: str | None = None,
        backend: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        artifact_dir: str | os.PathLike | None = None,
        static_shapes: bool | None = None,
        hal_device: ireert.HalDevice | None = None,
    ):
        self.static_shapes = static_shapes
        self.target = target_for(device, chip, backend)
        self.driver = device
        self.device = hal_device if hal_device is not None else open_device(device)
        self.store = ArtifactStore(cache_dir, [artifact_dir] if artifact_dir is not None else [])
        self._instance = ireert.VmInstance()
        self._hal_module = ireert.create_hal_module(self._instance, self.device)
        # Per shape (bounded, SHAPES_KEPT each): Specialization -> {function name: _Entry} of its
        # loaded module; (kernel, dtype, shape) -> Specialization; call signature -> _Plan.
        self._modules = RecentlyUsed(SHAPES_KEPT)
        self._specs = RecentlyUsed(SHAPES_KEPT)
        self._plans = RecentlyUsed(SHAPES_KEPT)
        # Held while a plan is made, which loads entries, specialisations and
        # scratch buffers; plans are only ever added whole, so the cached-plan
        # path reads them unlocked.
        self._load_lock = threading.Lock()
        # Guards the timeline: a value is taken and its call invoked as one step.
        self._queue_lock = threading.Lock()
        self._timeline = self.device.create_semaphore(0)
        self._last_signal = 0

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls)
        _LIVE.add(self)  # for close_all at exit
        return self

    def close(self) -> None:
        """Waits for queued calls, then releases this object's IREE objects,
        modules before the device. Later calls raise RuntimeError. Arrays the
        caller holds keep their own buffers."""
        if getattr(self, "_instance", None) is None:  # closed, or __init__ failed before opening
            return
        self.synchronize()
        self._plans.clear()
        self._modules.clear()
        self._hal_module = self._instance = self._timeline = self.device = None

    def _require_open(self) -> None:
        if self.device is None:
            raise RuntimeError(f"this LayerNormKernels ({self.driver}) was closed; make a new one")

    def specialization(self, kernel: Kernel, dtype: str, shape: tuple[int, int]) -> Specialization:
        """Which artifact serves a call of ``shape`` (see ``static_shapes``), decided once per shape."""
        self._require_open()
        key = (kernel.name, dtype, shape)
        spec = self._specs.get(key)
        if spec is None:
            spec = serving_specialization(self.store, self.target, self.static_shapes, kernel, dtype, shape)
            self._specs.put(key, spec)
        return spec

    def entry(self, kernel: Kernel, dtype: str, name: str, shape: tuple[int, int]) -> _Entry:
        """Entry point ``name`` of ``kernel``'s artifact for [M, N] = ``shape``, loaded once."""
        self._require_open()
        self.target.check_dtype(dtype)
        spec = self.specialization(kernel, dtype, shape)
        entries = self._modules.get(spec)
        if entries is None:
            path, data = self.store.obtain(spec, self.target)
            try:
                vm_module = ireert.VmModule.copy_buffer(self._instance, data)
            except (RuntimeError, ValueError) as e:  # bytes that match their record but are no module
                raise RuntimeError(f"{path} is not a loadable IREE module ({e}); remove it and its record") from e
            context = ireert.VmContext(self._instance, modules=[self._hal_module, vm_module])
            entries = {}
            for fn_name in kernel.functions:
                function = vm_module.lookup_function(fn_name)
                size_name = function.reflection.get("iree.abi.transients.size")
                size_function = vm_module.lookup_function(size_name) if size_name else None
                entries[fn_name] = _Entry(context, function, size_function, RecentlyUsed(SHAPES_KEPT))
            self._modules.put(spec, entries)
        return entries[name]

    def _buffer(self, nbytes: int) -> ireert.HalBuffer:
        self._require_open()
        return self.device.allocator.allocate_buffer(
            memory_type=ireert.MemoryType.DEVICE_LOCAL,
            allowed_usage=ireert.BufferUsage.DEFAULT,
            allocation_size=nbytes,
        )

    def _transients(self, entry: _Entry, shape: tuple[int, int], args: list) -> ireert.HalBuffer:
        """The entry's scratch buffer for ``shape``, sized once by the module itself."""
        buffer = entry.transients.get(shape)
        if buffer is None:
            constant = entry.function.reflection.get("iree.abi.transients.size.constant")
            if constant is not None:
                size = int(constant)
            else:
                # The size query takes the call's own arguments (scratch and fences unused).
                query = self._arg_list(args, self._buffer(1), ireert.HalFence(1), ireert.HalFence(1))
                result = ireert.VmVariantList(1)
                with self._queue_lock:  # one invoke at a time on a context
                    entry.context.invoke(entry.size_function, query, result)
                size = int(result.get_variant(0))
            buffer = self._buffer(max(size, 1))
            entry.transients.put(shape, buffer)
        return buffer

    @staticmethod
    def _arg_list(args, transients, wait_fence, signal_fence) -> ireert.VmVariantList:
        arg_list = ireert.VmVariantList(len(args) + 3)
        for arg in args:
            if isinstance(arg, float):
                arg_list.push_float(arg)
            else:
                arg_list.push_ref(arg._buffer_view.ref)
        arg_list.push_ref(transients.ref)
        arg_list.push_ref(wait_fence.ref)
        arg_list.push_ref(signal_fence.ref)
        return arg_list

    def _enqueue(self, submit, wait: bool) -> None:
        """Queues ``submit(wait_fence, signal_fence)`` after everything queued
        before it, on the next value of the timeline; waits for it when ``wait``."""
        with self._queue_lock:
            timeline, value = self._timeline, self._last_signal
            signal = ireert.HalFence.create_at(timeline, value + 1)
            try:
                submit(ireert.HalFence.create_at(timeline, value), signal)
            except BaseException:
                self._restart_timeline()
                raise
            self._last_signal = value + 1
        if wait:
            self._wait(signal, timeline)

    def _restart_timeline(self) -> None:
        """After a submission failed (the caller holds the queue lock): it may
        have queued part of its work, which would signal its value late or
        never, so later calls go on a new semaphore. The calls before it are
        waited for first, so that later calls still run after them; an error
        of theirs is raised here, after the move."""
        timeline, value = self._timeline, self._last_signal
        self._timeline = self.device.create_semaphore(0)
        self._last_signal = 0
        ireert.HalFence.create_at(timeline, value).wait()

    def _wait(self, fence: ireert.HalFence, timeline: ireert.HalSemaphore) -> None:
        """Waits for ``fence`` on ``timeline``. A call that failed on the device
        fails the semaphore, and with it every later wait: once that error is
        raised to a caller here, later calls go on a new semaphore."""
        try:
            fence.wait()
        except BaseException:
            with self._queue_lock:
                if self._timeline is timeline and not _is_healthy(timeline):
                    self._timeline = self.device.create_semaphore(0)
                    self._last_signal = 0
            raise

    def _submit(self, plan: _Plan, args: list, wait: bool) -> None:
        """Queues one call after the previous one (coarse-fences ABI); waits for it when ``wait``."""
        entry = plan.entry
        results = ireert.VmVariantList(len(plan.outputs))
        self._enqueue(
            lambda wait_fence, signal: entry.context.invoke(
                entry.function, self._arg_list(args, plan.transients, wait_fence, signal), results
            ),
            wait,
        )

    def _plan(self, kernel: Kernel, problem: Problem, name: str, inputs, scalars, outputs) -> _Plan:
        """The plan for a validated call. ``inputs``: (device array, kernel
        shape) per tensor input; ``outputs``: (device array, dtype, kernel
        shape) per output."""
        with self._load_lock:  # fills the entries, specialisations and scratch that all threads share
            entry = self.entry(kernel, problem.dtype, name, (problem.m, problem.n))
            args = [self._as_matrix(a, s) for a, s in inputs] + list(scalars)
            args += [self._as_matrix(a, s) for a, _, s in outputs]
            transients = self._transients(entry, (problem.m, problem.n), args)
            input_views = tuple(None if shape_and_dtype(a)[0] == s else s for a, s in inputs)
            output_views = []
            for array, dtype, kernel_shape in outputs:
                shape = shape_and_dtype(array)[0]
                output_views.append((shape, dtype, None if shape == kernel_shape else kernel_shape))
            return _Plan(entry, transients, input_views, tuple(output_views))

    def _launch(self, plan: _Plan, inputs, scalars, given, wait: bool) -> tuple:
        """Runs ``plan`` on ``inputs`` (then ``scalars``) into the ``given``
        outputs, allocating those that are None; returns the caller-shaped outputs."""
        outputs = tuple(
            array if array is not None else self.allocate(shape, dtype)
            for array, (shape, dtype, _) in zip(given, plan.outputs)
        )
        args = [a if view is None else self._as_matrix(a, view) for a, view in zip(inputs, plan.input_views)]
        args += scalars
        args += [a if view is None else self._as_matrix(a, view) for a, (_, _, view) in zip(outputs, plan.outputs)]
        self._submit(plan, args, wait)
        return outputs

    def queued(self) -> tuple[ireert.HalSemaphore, int]:
        """(timeline, value): the semaphore and the value on it that the last
        queued call signals (a failed submission moves later calls to a new
        semaphore, so both can change)."""
        self._require_open()
        with self._queue_lock:
            return self._timeline, self._last_signal

    def synchronize(self) -> None:
        """Waits for every call queued so far (after calls made with ``wait=False``)."""
        self._require_open()
        with self._queue_lock:
            timeline = self._timeline
            fence = ireert.HalFence.create_at(timeline, self._last_signal)
        self._wait(fence, timeline)

    def to_device(self, array) -> ireert.DeviceArray:
        """Uploads a NumPy array (C-contiguous copy) to this device."""
        self._require_open()
        if isinstance(array, ireert.DeviceArray):
            return array
        return ireert.asdevicearray(self.device, np.ascontiguousarray(array), implicit_host_transfer=True)

    def empty(self, shape, dtype) -> ireert.DeviceArray:
        """A zero-filled array; zero-size ones live in host-visible memory,
        since GPU drivers cannot import a zero-byte host allocation in to_host()."""
        self._require_open()
        array = np.zeros(shape, dtype)
        if array.size:
            return self.to_device(array)
        return ireert.asdevicearray(
            self.device,
            array,
            implicit_host_transfer=True,
            memory_type=ireert.MemoryType.HOST_LOCAL | ireert.MemoryType.DEVICE_VISIBLE,
            allowed_usage=ireert.BufferUsage.DEFAULT | ireert.BufferUsage.MAPPING,
        )

    def allocate(self, shape, dtype) -> ireert.DeviceArray:
        """An uninitialised device array (no host copy, no fill). Its buffer is
        exactly its size: DeviceArray.to_host copies the whole buffer."""
        dtype = np.dtype(dtype)
        buffer = self._buffer(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        element_type = ireert.array_interop.map_dtype_to_element_type(dtype)
        return ireert.DeviceArray(
            self.device, ireert.HalBufferView(buffer, list(shape), element_type), implicit_host_transfer=True
        )

    @staticmethod
    def _given(out, count: int) -> tuple:
        """``out`` as ``count`` entries (None: allocate): None, the first output
        alone, or a tuple of them."""
        given = tuple(out) if isinstance(out, (tuple, list)) else (out,)
        if len(given) > count:
            raise ValueError(f"out has {len(given)} arrays; this call has {count} outputs")
        return given + (None,) * (count - len(given))

    @staticmethod
    def _check_outputs(given, specs: list[tuple[str, tuple[int, ...], np.dtype]]) -> None:
        """The ``given`` outputs checked against ``specs`` [(name, shape, dtype)]."""
        for array, (name, shape, dtype) in zip(given, specs):
            if array is None:
                continue
            if not isinstance(array, ireert.DeviceArray):
                raise TypeError(
                    f"out {name} must be a device array of this device (LayerNormKernels.allocate), got {type(array).__name__}"
                )
            if shape_and_dtype(array) != (shape, dtype):
                got_shape, got_dtype = shape_and_dtype(array)
                raise ValueError(f"out {name} must have shape {shape} and dtype {dtype}, got {got_shape} {got_dtype}")

    def _empty_batch(self, kernel: Kernel, entry: Entry, problem: Problem, specs, given, wait: bool) -> tuple:
        """The results of an empty batch (M == 0), torch's convention: empty
        ROWS and ROW_STATS results, zero COLUMNS results (sums over no rows),
        written into the ``given`` arrays. A one-row call of
        ``entry.zero_columns_from`` on zero inputs writes the zeros, because a
        kernel can write any device array and a transfer cannot (DLPack
        imports, torch's tensors, do not allow the DISCARD_WRITE access a
        copy or fill needs)."""
        columns = [arg.role is Role.COLUMNS for arg in entry.outputs]
        if any(columns):
            source = kernel.entry(entry.zero_columns_from)
            storage, stats = STORAGE_DTYPES[problem.dtype], STATS_DTYPES[problem.dtype]
            one_row = {
                Role.ROWS: np.zeros((1, problem.n), storage),
                Role.COLUMNS: np.zeros(problem.n, storage),
                Role.ROW_STATS: np.ones(1, stats),
            }
            written = self.call(
                kernel, source.name, tuple(one_row[arg.role] for arg in source.inputs),
                out=tuple(a if is_column else None for a, is_column in zip(given, columns)), wait=wait,
            )
            given = tuple(w if is_column else a for a, w, is_column in zip(given, written, columns))
        return tuple(a if a is not None else self.empty(shape, dtype) for a, (_, shape, dtype) in zip(given, specs))

    def _as_matrix(self, array, shape: tuple[int, ...]) -> ireert.DeviceArray:
        """``array`` on the device, viewed with ``shape`` (no copy for device arrays)."""
        if isinstance(array, ireert.DeviceArray):
            view = array._buffer_view
            if tuple(view.shape) == shape:
                return array
            # DeviceArray.reshape goes through the host; a new view of the same buffer does not.
            return ireert.DeviceArray(
                self.device,
                ireert.HalBufferView(view.get_buffer(), list(shape), view.element_type),
                implicit_host_transfer=True,
            )
        return self.to_device(np.reshape(array, shape))

    def call(self, kernel: Kernel, name: str, inputs: tuple, *, out=None, wait: bool = True, **scalars):
        """Runs entry point ``name`` of ``kernel`` on ``inputs`` (in the
        entry's order) and its ``scalars`` (keywords); returns its outputs as
        device arrays. What each argument must be follows from its role
        (``lnbwd_iree.specialization.Role``): ROWS inputs share one [..., N]
        shape, COLUMNS are [N], ROW_STATS one value per row in the arithmetic
        type; all in one storage dtype. ``out``: device arrays that receive the
        results (the first alone, or a tuple; the rest are allocated); an
        ``out`` array must not share memory with an input or with another
        output (ValueError: the kernels read inputs after writing outputs).
        ``wait=False`` returns once the call is queued: read results only
        after ``synchronize()``. An empty batch (M == 0) gives empty ROWS and
        ROW_STATS results and zero COLUMNS ones.

        The first call with a given set of shapes and dtypes validates them and
        finds the artifact; later calls with device arrays of the same
        signature go straight to the device queue."""
        entry = kernel.entry(name)
        if scalars.keys() != entry.scalar_names:
            raise TypeError(f"{name} takes the scalars {entry.scalars}, got {tuple(scalars)}")
        return self.call_checked(kernel, name, inputs, tuple([check_eps(scalars[s]) for s in entry.scalars]),
                                 out=out, wait=wait)

    def call_checked(self, kernel: Kernel, name: str, inputs: tuple, values: tuple, *, out=None, wait: bool = True):
        """``call`` with its scalars as ``values`` in the entry's order, each
        already checked by ``check_eps``: for callers that check them once
        per call themselves (lnbwd_iree.torch)."""
        self._require_open()  # before refuse_shared_memory, which reads the device
        entry = kernel.entry(name)
        inputs = tuple(inputs)
        given = self._given(out, len(entry.outputs))
        refuse_shared_memory(self.device, entry.labels, inputs, given)
        key = _signature(name, inputs + given)
        plan = self._plans.get(key)
        if plan is None:
            groups = {role: {a.name: x for a, x in zip(entry.inputs, inputs) if a.role is role} for role in Role}
            problem = check_problem(groups[Role.ROWS], groups[Role.COLUMNS], groups[Role.ROW_STATS])
            self.target.check_dtype(problem.dtype)
            storage, stats = STORAGE_DTYPES[problem.dtype], STATS_DTYPES[problem.dtype]
            caller = {  # role -> (shape the caller sees, dtype, shape the kernel takes)
                Role.ROWS: (problem.shape, storage, (problem.m, problem.n)),
                Role.COLUMNS: ((problem.n,), storage, (problem.n,)),
                Role.ROW_STATS: (problem.batch_shape, stats, (problem.m,)),
            }
            specs = [(a.name, *caller[a.role][:2]) for a in entry.outputs]
            self._check_outputs(given, specs)
            if problem.m == 0:
                return self._empty_batch(kernel, entry, problem, specs, given, wait)
            given = tuple(a if a is not None else self.allocate(shape, dtype) for a, (_, shape, dtype) in zip(given, specs))
            inputs = tuple(self.to_device(a) for a in inputs)
            plan = self._plan(
                kernel, problem, name,
                [(a, caller[arg.role][2]) for a, arg in zip(inputs, entry.inputs)],
                values,
                [(a, caller[arg.role][1], caller[arg.role][2]) for a, arg in zip(given, entry.outputs)],
            )
            if key is not None:
                self._plans.put(key, plan)
        return self._launch(plan, inputs, values, given, wait)

    def backward(self, dy, x, gamma, mean=None, rstd=None, *, eps: float = 1e-5, out=None, wait: bool = True):
        """LayerNorm's dX, dgamma, dbeta as device arrays. ``mean``/``rstd`` are
        the forward's f32 statistics; when both are None they are recomputed
        from X with ``eps``. ``out`` (dX alone or (dX, dgamma, dbeta)) and
        ``wait`` as for ``call``. An empty batch (M == 0) gives an empty dX
        and zero dgamma and dbeta."""
        if (mean is None) != (rstd is None):
            raise ValueError("pass both mean and rstd (the forward's statistics) or neither")
        if mean is None:
            return self.call(LAYERNORM_BACKWARD, "layernorm_backward_recompute", (dy, x, gamma), out=out, wait=wait,
                             eps=eps)
        check_eps(eps)
        return self.call(LAYERNORM_BACKWARD, "layernorm_backward", (dy, x, gamma, mean, rstd), out=out, wait=wait)

    def forward(self, x, gamma, beta, *, eps: float = 1e-5, out=None, wait: bool = True):
        """LayerNorm's y, mean, rstd as device arrays; mean and rstd (f32, f64
        for f64 data) have X's leading dims. ``out`` (y alone or (y, mean,
        rstd)) and ``wait`` as for ``call``."""
        return self.call(LAYERNORM_FORWARD, "layernorm_forward", (x, gamma, beta), out=out, wait=wait, eps=eps)

    def rmsnorm_backward(self, dy, x, gamma, rstd=None, *, eps: float | None = None, out=None, wait: bool = True):
        """RMSNorm's dX, dgamma as device arrays. ``rstd`` is the forward's
        (f32, f64 for f64 data); when None it is recomputed from X with
        ``eps``, which is then required. ``out`` (dX alone or (dX, dgamma))
        and ``wait`` as for ``call``."""
        if rstd is None:
            if eps is None:
                raise TypeError("rmsnorm_backward without rstd recomputes it from x: pass eps")
            return self.call(RMSNORM_BACKWARD, "rmsnorm_backward_recompute", (dy, x, gamma), out=out, wait=wait,
                             eps=eps)
        if eps is not None:
            check_eps(eps)
        return self.call(RMSNORM_BACKWARD, "rmsnorm_backward", (dy, x, gamma, rstd), out=out, wait=wait)

    def rmsnorm_forward(self, x, gamma, *, eps: float, out=None, wait: bool = True):
        """RMSNorm's y and rstd = 1/sqrt(mean(x^2) + eps) as device arrays; rstd
        (f32, f64 for f64 data) has X's leading dims. ``out`` (y alone or (y,
        rstd)) and ``wait`` as for ``call``."""
        return self.call(RMSNORM_FORWARD, "rmsnorm_forward", (x, gamma), out=out, wait=wait, eps=eps)
