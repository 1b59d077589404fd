"""Launches an artifact's kernels directly on a caller's GPU stream, from its launch plan.

IREE 3.13's cuda driver runs on a stream of its own and cannot wait on or
signal CUDA events, so a call through it synchronises the host twice. The
kernels themselves need none of that: a launch plan (``lnbwd_iree.launch_plan``)
says which kernels an entry point launches, with which grid, constants and
buffers. ``GpuLauncher`` loads the plan's kernels once per device (the CUDA
or HIP driver API through ctypes: nothing to compile at install) and
launches on the stream the caller names (torch's current stream), in order,
without waiting: the caller's stream orders everything, as for any of its own
kernels, and a graph capture records the launches.

Kernel ABI (IREE's cuda and hip stream command buffers): one 64-bit device
pointer per binding (buffer address plus the binding's offset), then one
32-bit value per constant; block dims from the executable's export, dynamic
shared memory from it on CUDA and none on HIP (IREE's hip driver passes 0)."""

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
from .targets import Target

_CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8


class GpuError(RuntimeError):
    """A GPU driver call failed; the message names the call and the error."""


@dataclass(frozen=True)
class DriverAPI:
    """How one GPU driver API spells the calls the launcher makes."""

    name: str  # "CUDA" or "HIP"
    library: str
    executable_format: str  # the launch plan executables it loads
    calls: dict  # role -> the API's function name
    dynamic_shared_memory: bool  # whether launches pass the export's dynamic shared memory


CUDA = DriverAPI("CUDA", "libcuda.so.1", "cuda-nvptx-fb", {
    "init": "cuInit", "device_get": "cuDeviceGet", "primary_context": "cuDevicePrimaryCtxRetain",
    "push": "cuCtxPushCurrent_v2", "pop": "cuCtxPopCurrent_v2", "current": "cuCtxGetCurrent",
    "load": "cuModuleLoadDataEx", "function": "cuModuleGetFunction", "set_attribute": "cuFuncSetAttribute",
    "launch": "cuLaunchKernel", "copy": "cuMemcpyDtoDAsync_v2", "error_name": "cuGetErrorName",
}, dynamic_shared_memory=True)
HIP = DriverAPI("HIP", "libamdhip64.so", "rocm-hsaco-fb", {
    "init": "hipInit", "device_get": "hipDeviceGet", "primary_context": "hipDevicePrimaryCtxRetain",
    "push": "hipCtxPushCurrent", "pop": "hipCtxPopCurrent", "current": "hipCtxGetCurrent",
    "load": "hipModuleLoadData", "function": "hipModuleGetFunction", "set_attribute": None,
    "launch": "hipModuleLaunchKernel", "copy": "hipMemcpyDtoDAsync", "error_name": "hipGetErrorName",
}, dynamic_shared_memory=False)
# The driver API that launches each launch-plan backend's artifacts.
BACKEND_APIS = {"cuda": CUDA, "rocm": HIP}


class GpuDriver:
    """The few driver API calls the launcher makes, through ctypes (``lib``:
    the loaded library, or a stand-in with the same functions)."""

    def __init__(self, api: DriverAPI, lib=None):
        self.api = api
        if lib is None:
            try:
                lib = ctypes.CDLL(api.library)
            except OSError as e:
                raise GpuError(f"the {api.name} driver library {api.library} could not be loaded ({e})") from None
        self.lib = lib
        p, u, i = ctypes.c_void_p, ctypes.c_uint, ctypes.c_int
        load = (ctypes.POINTER(p), ctypes.c_char_p, u, ctypes.POINTER(i), ctypes.POINTER(p)) if api is CUDA else \
            (ctypes.POINTER(p), ctypes.c_char_p)
        self.init = self._declare("init", u)
        self.device_get = self._declare("device_get", ctypes.POINTER(i), i)
        self.primary = self._declare("primary_context", ctypes.POINTER(p), i)
        self.push = self._declare("push", p)
        self.pop = self._declare("pop", ctypes.POINTER(p))
        self.current = self._declare("current", ctypes.POINTER(p))
        self.load = self._declare("load", *load)
        self.get_function = self._declare("function", ctypes.POINTER(p), p, ctypes.c_char_p)
        self.set_attribute = self._declare("set_attribute", p, i, i) if api.calls["set_attribute"] else None
        self.launch_kernel = self._declare("launch", p, u, u, u, u, u, u, u, p, ctypes.POINTER(p), p)
        self.copy = self._declare("copy", ctypes.c_uint64, ctypes.c_uint64, ctypes.c_size_t, p)
        if api is CUDA:
            self._error_name = self._declare("error_name", i, ctypes.POINTER(ctypes.c_char_p))
        else:
            self._error_name = getattr(lib, api.calls["error_name"])
            self._error_name.argtypes, self._error_name.restype = [i], ctypes.c_char_p
        self.check(self.init(0), api.calls["init"])

    def _declare(self, role: str, *argtypes):
        function = getattr(self.lib, self.api.calls[role])
        function.argtypes = argtypes
        function.restype = ctypes.c_int
        return function

    def error_name(self, status: int) -> str:
        if self.api is CUDA:
            name = ctypes.c_char_p()
            found = self._error_name(status, ctypes.byref(name)) == 0 and name.value
        else:
            name = ctypes.c_char_p(self._error_name(status))
            found = bool(name.value)
        return name.value.decode() if found else f"{self.api.name} error {status}"

    def check(self, status: int, what: str) -> None:
        if status != 0:
            raise GpuError(f"{what} failed: {self.error_name(status)}")

    def primary_context(self, ordinal: int) -> ctypes.c_void_p:
        device, context = ctypes.c_int(), ctypes.c_void_p()
        calls = self.api.calls
        self.check(self.device_get(ctypes.byref(device), ordinal), f"{calls['device_get']}({ordinal})")
        self.check(self.primary(ctypes.byref(context), device), calls["primary_context"])
        return context

    def load_module(self, context, image: bytes, what: str) -> ctypes.c_void_p:
        """``image`` (NUL-terminated PTX, or HSACO) loaded into ``context``; on
        CUDA with the JIT's error log on failure."""
        module = ctypes.c_void_p()
        log = ctypes.create_string_buffer(8192)
        self.check(self.push(context), self.api.calls["push"])
        try:
            if self.api is CUDA:
                # CU_JIT_ERROR_LOG_BUFFER = 5, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6
                options = (ctypes.c_int * 2)(5, 6)
                values = (ctypes.c_void_p * 2)(ctypes.cast(log, ctypes.c_void_p), ctypes.c_void_p(len(log)))
                status = self.load(ctypes.byref(module), image, 2, options, values)
            else:
                status = self.load(ctypes.byref(module), image)
        finally:
            self.pop(ctypes.byref(ctypes.c_void_p()))
        if status != 0:
            detail = log.value.decode(errors="replace").strip()
            raise GpuError(f"{self.api.calls['load']} of {what} failed: {self.error_name(status)}"
                           + (f": {detail}" if detail else ""))
        return module

    def function(self, module, name: str, shared_memory: int) -> ctypes.c_void_p:
        function = ctypes.c_void_p()
        self.check(self.get_function(ctypes.byref(function), module, name.encode()),
                   f"{self.api.calls['function']}({name})")
        if self.set_attribute is not None:
            self.check(self.set_attribute(function, _CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared_memory),
                       f"{self.api.calls['set_attribute']}({name})")
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


class GpuLauncher:
    """Launch plans loaded on one GPU (its primary context, the one the CUDA
    or HIP runtime and torch use), launched on caller-given streams."""

    def __init__(self, ordinal: int, driver: GpuDriver):
        self.driver = driver
        self.context = driver.primary_context(ordinal)
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
                    api = self.driver.api
                    if source.format != api.executable_format:
                        raise GpuError(f"executable {executable} is {source.format}; the {api.name} launcher"
                                       f" loads {api.executable_format}")
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
        driver = self.driver
        shared = driver.api.dynamic_shared_memory
        for launch in bound.launches:
            if isinstance(launch, _Copy):
                (source, source_offset), (target, target_offset) = launch.source, launch.target
                args = (addresses[target] + target_offset, addresses[source] + source_offset, launch.length, stream)
                self._call(driver.copy, args, launch)
                continue
            kernel = launch.kernel
            with launch.lock:
                pointers = launch.pointers
                for i, (slot, offset) in enumerate(launch.sources):
                    pointers[i] = addresses[slot] + offset
                args = (kernel.function, *launch.grid, *kernel.block, kernel.shared_memory if shared else 0, stream,
                        launch.params, None)
                self._call(driver.launch_kernel, args, launch)

    def _call(self, function, args, launch) -> None:
        status = function(*args)
        if status == 0:
            return
        if self._foreign_context():
            # Another device's context is current on this thread: run in ours,
            # leaving the caller's current context as it was.
            driver = self.driver
            driver.check(driver.push(self.context), driver.api.calls["push"])
            try:
                status = function(*args)
            finally:
                driver.pop(ctypes.byref(ctypes.c_void_p()))
        if isinstance(launch, _Copy):
            what = f"{self.driver.api.calls['copy']} of {launch.length} bytes"
        else:
            what = (f"{self.driver.api.calls['launch']} of {launch.kernel.name} (grid {launch.grid},"
                    f" block {launch.kernel.block})")
        self.driver.check(status, what)

    def _foreign_context(self) -> bool:
        current = ctypes.c_void_p()
        return self.driver.current(ctypes.byref(current)) == 0 and current.value != self.context.value


class DirectRunner:
    """Runs any kernel's entry point on a caller's stream of ``target``'s GPU
    (cuda, or rocm through HIP): the artifact that serves the call shape is
    found (or built) as for ``LayerNormKernels`` (``runtime.serving_specialization``), its
    launch plan bound once per (entry, dtype, shape, scalars), then launched.
    Tensors are anything with ``shape`` and ``data_ptr()`` (torch tensors);
    scratch comes from the caller's ``allocate(nbytes)``, whose result must
    stay usable by work queued on the stream after its release (torch's
    caching allocator does this for its current stream)."""

    def __init__(self, ordinal: int, target: Target, static_shapes: bool | None = None,
                 store: ArtifactStore | None = None, driver: GpuDriver | None = None):
        if not target.has_launch_plans:
            raise ValueError(f"{target.name} artifacts have no launch plans; direct launches need cuda or rocm")
        self.launcher = GpuLauncher(ordinal, driver or GpuDriver(BACKEND_APIS[target.backend]))
        self.target = target
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
