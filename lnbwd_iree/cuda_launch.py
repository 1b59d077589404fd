"""Launches an artifact's kernels directly on a caller's CUDA stream, from its launch plan.

IREE 3.13's cuda driver runs on a stream of its own and cannot wait on or
signal CUDA events, so a call through it synchronises the host twice. The
kernels themselves need none of that: a launch plan (``lnbwd_iree.launch_plan``)
says which kernels an entry point launches, with which grid, constants and
buffers. ``CudaLauncher`` loads the plan's PTX once per device (CUDA driver API
through ctypes: nothing to compile at install) and launches on the stream the
caller names (torch's current stream), in order, without waiting: the
caller's stream orders everything, as for any of its own kernels, and a CUDA
graph capture records the launches.

Kernel ABI (IREE's cuda command buffer): one 64-bit device pointer per
binding (buffer address plus the binding's offset), then one 32-bit value per
constant; block dims and dynamic shared memory from the executable's export."""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import Hashable

from .cache import ArtifactStore
from .launch_plan import Copy, EntryPlan, LaunchPlan, evaluate, f32_bits
from .recent import SHAPES_KEPT, RecentlyUsed
from .runtime import serving_specialization
from .specialization import Kernel
from .targets import target_for

_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8


class CudaError(RuntimeError):
    """A CUDA driver call failed; the message names the call and the error."""


class CudaDriver:
    """The few CUDA driver API calls the launcher makes (libcuda through ctypes)."""

    def __init__(self, library: str = "libcuda.so.1"):
        try:
            self.lib = ctypes.CDLL(library)
        except OSError as e:
            raise CudaError(f"the CUDA driver library {library} could not be loaded ({e})") from None
        p, u, i = ctypes.c_void_p, ctypes.c_uint, ctypes.c_int
        self._declare("cuInit", u)
        self._declare("cuDeviceGet", ctypes.POINTER(i), i)
        self._declare("cuDevicePrimaryCtxRetain", ctypes.POINTER(p), i)
        self._declare("cuCtxPushCurrent_v2", p)
        self._declare("cuCtxPopCurrent_v2", ctypes.POINTER(p))
        self._declare("cuCtxGetCurrent", ctypes.POINTER(p))
        self._declare("cuModuleLoadDataEx", ctypes.POINTER(p), ctypes.c_char_p, u, ctypes.POINTER(i), ctypes.POINTER(p))
        self._declare("cuModuleGetFunction", ctypes.POINTER(p), p, ctypes.c_char_p)
        self._declare("cuFuncSetAttribute", p, i, i)
        self._declare("cuLaunchKernel", p, u, u, u, u, u, u, u, p, ctypes.POINTER(p), p)
        self._declare("cuMemcpyDtoDAsync_v2", ctypes.c_uint64, ctypes.c_uint64, ctypes.c_size_t, p)
        self._declare("cuGetErrorName", i, ctypes.POINTER(ctypes.c_char_p))
        self.check(self.lib.cuInit(0), "cuInit")

    def _declare(self, name: str, *argtypes) -> None:
        function = getattr(self.lib, name)
        function.argtypes = argtypes
        function.restype = ctypes.c_int

    def error_name(self, status: int) -> str:
        name = ctypes.c_char_p()
        if self.lib.cuGetErrorName(status, ctypes.byref(name)) == 0 and name.value:
            return name.value.decode()
        return f"CUresult {status}"

    def check(self, status: int, what: str) -> None:
        if status != 0:
            raise CudaError(f"{what} failed: {self.error_name(status)}")

    def primary_context(self, ordinal: int) -> ctypes.c_void_p:
        device, context = ctypes.c_int(), ctypes.c_void_p()
        self.check(self.lib.cuDeviceGet(ctypes.byref(device), ordinal), f"cuDeviceGet({ordinal})")
        self.check(self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(context), device), "cuDevicePrimaryCtxRetain")
        return context

    def load_module(self, context, image: bytes, what: str) -> ctypes.c_void_p:
        """``image`` (NUL-terminated PTX) loaded into ``context``, with the JIT's error log on failure."""
        log = ctypes.create_string_buffer(8192)
        # CU_JIT_ERROR_LOG_BUFFER = 5, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6
        options = (ctypes.c_int * 2)(5, 6)
        values = (ctypes.c_void_p * 2)(ctypes.cast(log, ctypes.c_void_p), ctypes.c_void_p(len(log)))
        module = ctypes.c_void_p()
        self.check(self.lib.cuCtxPushCurrent_v2(context), "cuCtxPushCurrent")
        try:
            status = self.lib.cuModuleLoadDataEx(ctypes.byref(module), image, 2, options, values)
        finally:
            self.lib.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
        if status != 0:
            raise CudaError(f"cuModuleLoadDataEx of {what} failed: {self.error_name(status)}: "
                            f"{log.value.decode(errors='replace').strip()}")
        return module

    def function(self, module, name: str, shared_memory: int) -> ctypes.c_void_p:
        function = ctypes.c_void_p()
        self.check(self.lib.cuModuleGetFunction(ctypes.byref(function), module, name.encode()),
                   f"cuModuleGetFunction({name})")
        self.check(self.lib.cuFuncSetAttribute(function, _CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                               shared_memory), f"cuFuncSetAttribute({name})")
        return function


@dataclass(frozen=True)
class _Kernel:
    name: str
    function: ctypes.c_void_p
    block: tuple[int, int, int]
    shared_memory: int


class _Launch:
    """One dispatch of an entry at one shape: its kernel, grid and constants
    fixed, its parameter block allocated once; the buffers' addresses are
    written in per call. ``sources``: per binding, (buffer index, offset) where
    the index counts the call's tensors, then the transients, then the
    allocations."""

    def __init__(self, kernel: _Kernel, grid, constants, sources):
        self.kernel = kernel
        self.grid = grid
        self.sources = sources
        count = len(sources) + len(constants)
        self.pointers = (ctypes.c_uint64 * max(len(sources), 1))()
        self.values = (ctypes.c_uint32 * max(len(constants), 1))(*constants)
        size = ctypes.sizeof(ctypes.c_uint64)
        base, values = ctypes.addressof(self.pointers), ctypes.addressof(self.values)
        self.params = (ctypes.c_void_p * max(count, 1))(
            *[base + size * i for i in range(len(sources))], *[values + 4 * i for i in range(len(constants))]
        )
        self.lock = threading.Lock()  # the parameter block is shared by the threads that launch it


@dataclass(frozen=True)
class _Copy:
    """One buffer copy of an entry at one shape: (buffer index, offset) of its
    source and target, as ``_Launch.sources`` counts them, and its bytes."""

    source: tuple[int, int]
    target: tuple[int, int]
    length: int


@dataclass(frozen=True)
class BoundEntry:
    """An entry point resolved for one call shape: what the caller allocates and what is queued."""

    transients: int  # bytes
    allocations: tuple[int, ...]  # bytes of each buffer the entry allocates
    launches: tuple  # _Launch and _Copy, in order


class CudaLauncher:
    """Launch plans loaded on one CUDA device (its primary context, the one
    the CUDA runtime and torch use), launched on caller-given streams."""

    def __init__(self, ordinal: int, driver: CudaDriver | None = None):
        self.driver = driver or CudaDriver()
        self.ordinal = ordinal
        self.context = self.driver.primary_context(ordinal)
        # Keyed by the artifact a plan was read from, which (unlike id(plan))
        # no other plan can take over once that plan is garbage-collected.
        self._kernels: dict[tuple[Hashable, str, str], _Kernel] = {}
        self._lock = threading.Lock()

    def _kernel(self, artifact: Hashable, plan: LaunchPlan, executable: str, name: str) -> _Kernel:
        key = (artifact, executable, name)
        kernel = self._kernels.get(key)
        if kernel is None:
            with self._lock:
                kernel = self._kernels.get(key)
                if kernel is None:
                    loaded = {}
                    source = plan.executables[executable]
                    if source.format != "cuda-nvptx-fb":
                        raise CudaError(f"executable {executable} is {source.format}, not CUDA PTX")
                    for kernel_name, export in source.kernels.items():
                        if export.module not in loaded:
                            loaded[export.module] = self.driver.load_module(
                                self.context, source.images[export.module], f"{executable}[{export.module}]")
                        self._kernels[(artifact, executable, kernel_name)] = _Kernel(
                            kernel_name, self.driver.function(loaded[export.module], kernel_name, export.shared_memory),
                            export.block, export.shared_memory,
                        )
                    kernel = self._kernels[key]
        return kernel

    def bind(self, artifact: Hashable, plan: LaunchPlan, entry: str, dims: dict, scalars: dict,
             tensor_args: tuple[int, ...]) -> BoundEntry:
        """``entry`` of ``plan`` for one call: ``artifact`` names what the plan
        was read from (its Specialization), under which its kernels stay
        loaded; ``dims`` maps a VM argument to its tensor's shape, ``scalars``
        a VM argument to its f32 value, and ``tensor_args`` lists the VM
        arguments in the order the caller passes their addresses."""
        entry_plan: EntryPlan = plan.entries[entry]
        bits = {k: f32_bits(v) for k, v in scalars.items()}
        transients = evaluate(entry_plan.transients_size, dims, bits)
        allocations = tuple(evaluate(a, dims, bits, transients) for a in entry_plan.allocations)
        index = {arg: i for i, arg in enumerate(tensor_args)}

        def source(buffer, offset):
            if buffer[0] == "arg":
                slot = index[buffer[1]]
            elif buffer[0] == "transients":
                slot = len(tensor_args)
            else:
                slot = len(tensor_args) + 1 + buffer[1]
            return slot, evaluate(offset, dims, bits, transients)

        launches = []
        for step in entry_plan.steps:
            if isinstance(step, Copy):
                launches.append(_Copy(source(*step.source), source(*step.target),
                                      evaluate(step.length, dims, bits, transients)))
                continue
            grid = tuple(evaluate(g, dims, bits, transients) for g in step.grid)
            constants = [evaluate(c, dims, bits, transients) & 0xFFFFFFFF for c in step.constants]
            launches.append(_Launch(self._kernel(artifact, plan, step.executable, step.kernel), grid, constants,
                                    [source(b, o) for b, o in step.bindings]))
        return BoundEntry(transients, allocations, tuple(launches))

    def launch(self, bound: BoundEntry, addresses, stream: int) -> None:
        """Queues ``bound``'s kernels and copies on ``stream`` (a CUstream handle; 0 is the
        legacy default stream). ``addresses``: the device addresses of the
        call's tensors (in ``bind``'s order), then of the transients buffer, then
        of each allocation."""
        lib = self.driver.lib
        for launch in bound.launches:
            if isinstance(launch, _Copy):
                (source, source_offset), (target, target_offset) = launch.source, launch.target
                args = (addresses[target] + target_offset, addresses[source] + source_offset, launch.length, stream)
                self._call(lib.cuMemcpyDtoDAsync_v2, args, launch)
                continue
            kernel = launch.kernel
            with launch.lock:
                pointers = launch.pointers
                for i, (slot, offset) in enumerate(launch.sources):
                    pointers[i] = addresses[slot] + offset
                args = (kernel.function, *launch.grid, *kernel.block, kernel.shared_memory, stream, launch.params, None)
                self._call(lib.cuLaunchKernel, args, launch)

    def _call(self, function, args, launch) -> None:
        status = function(*args)
        if status == 0:
            return
        if self._foreign_context():
            # Another device's context is current on this thread: run in ours,
            # leaving the caller's current context as it was.
            lib = self.driver.lib
            self.driver.check(lib.cuCtxPushCurrent_v2(self.context), "cuCtxPushCurrent")
            try:
                status = function(*args)
            finally:
                lib.cuCtxPopCurrent_v2(ctypes.byref(ctypes.c_void_p()))
        if isinstance(launch, _Copy):
            what = f"cuMemcpyDtoDAsync of {launch.length} bytes"
        else:
            what = f"cuLaunchKernel of {launch.kernel.name} (grid {launch.grid}, block {launch.kernel.block})"
        self.driver.check(status, what)

    def _foreign_context(self) -> bool:
        current = ctypes.c_void_p()
        return self.driver.lib.cuCtxGetCurrent(ctypes.byref(current)) == 0 and current.value != self.context.value


class DirectRunner:
    """Runs any kernel's entry point on a caller's CUDA stream: the artifact
    that serves the call shape is found (or built) as for
    ``LayerNormKernels("cuda")`` (``runtime.serving_specialization``), its
    launch plan bound once per (entry, dtype, shape, scalars), then launched.
    Tensors are anything with ``shape`` and ``data_ptr()`` (torch tensors);
    scratch comes from the caller's ``allocate(nbytes)``, whose result must
    stay usable by work queued on the stream after its release (torch's
    caching allocator does this for its current stream)."""

    def __init__(self, ordinal: int, static_shapes: bool | None = None, store: ArtifactStore | None = None):
        self.launcher = CudaLauncher(ordinal)
        self.target = target_for("cuda")
        self.store = store or ArtifactStore()
        self.static_shapes = static_shapes
        self._plans = RecentlyUsed(SHAPES_KEPT)  # Specialization -> LaunchPlan
        self._bound = RecentlyUsed(SHAPES_KEPT)  # (kernel, entry, dtype, M, N, scalars) -> BoundEntry

    def _bind(self, kernel: Kernel, entry_name: str, dtype: str, inputs: tuple, outputs: tuple,
              scalars: dict) -> BoundEntry:
        entry = kernel.entry(entry_name)
        spec = serving_specialization(self.store, self.target, self.static_shapes, kernel, dtype,
                                      tuple(inputs[0].shape))
        plan = self._plans.get(spec)
        if plan is None:
            # Two threads may both read a missing plan: the launcher loads its kernels once per artifact.
            plan = self.store.load_plan(spec, self.target)
            self._plans.put(spec, plan)
        # The VM function's arguments: inputs, scalars, outputs.
        first_output = len(entry.inputs) + len(entry.scalars)
        tensor_args = (*range(len(entry.inputs)), *range(first_output, first_output + len(entry.outputs)))
        dims = {arg: tuple(t.shape) for arg, t in zip(tensor_args, inputs + outputs)}
        values = {len(entry.inputs) + i: scalars[name] for i, name in enumerate(entry.scalars)}
        return self.launcher.bind(spec, plan, entry_name, dims, values, tensor_args)

    def run(self, kernel: Kernel, entry_name: str, dtype: str, inputs: tuple, outputs: tuple, scalars: dict,
            allocate, stream: int) -> None:
        """Queues entry ``entry_name`` of ``kernel`` on ``stream``: ``inputs`` and
        ``outputs`` in the entry's order, ``inputs[0]`` the [M, N] rows of
        storage dtype ``dtype`` (a ``dtypes.TABLE`` name), ``scalars`` by name.
        The caller has validated the call (shapes, dtypes, contiguity, 64-byte
        alignment)."""
        rows = inputs[0]
        key = (kernel.name, entry_name, dtype, *rows.shape, *scalars.values())
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bind(kernel, entry_name, dtype, inputs, outputs, scalars)
            self._bound.put(key, bound)
        addresses = [t.data_ptr() for t in inputs]
        addresses += [t.data_ptr() for t in outputs]
        scratch = [allocate(max(size, 1)) for size in (bound.transients, *bound.allocations)]
        addresses += [t.data_ptr() for t in scratch]
        self.launcher.launch(bound, addresses, stream)
