"""GpuLauncher's loaded kernels and launches, with stand-ins for the CUDA and HIP drivers (no GPU needed)."""

import ctypes
import gc

import pytest

from lnbwd_iree import compiler
from lnbwd_iree.cache import ArtifactStore
from lnbwd_iree.direct_launch import CUDA, HIP, DirectRunner, GpuDriver, GpuError, GpuLauncher
from lnbwd_iree.kernels import LAYERNORM_FORWARD, Specialization
from lnbwd_iree.launch_plan import Copy, Dispatch, EntryPlan, Executable, Kernel, LaunchPlan
from lnbwd_iree.targets import target_for


class RecordingDriver:
    """Loads "modules" that are their images, and functions that name their module."""

    api = CUDA

    def __init__(self):
        self.loaded = []

    def primary_context(self, ordinal):
        return ctypes.c_void_p(1)

    def load_module(self, context, image, what):
        self.loaded.append(image)
        return image

    def function(self, module, name, shared_memory):
        return (module, name)


def plan_with(image: bytes) -> LaunchPlan:
    """One entry, one dispatch of kernel "k" of executable "e", whose code is ``image``."""
    kernel = Kernel(name="k", module=0, block=(64, 1, 1), shared_memory=0, constants=0, bindings=0)
    executable = Executable(format="cuda-nvptx-fb", images=(image,), kernels={"k": kernel})
    dispatch = Dispatch(executable="e", kernel="k", grid=(1, 1, 1), constants=(), bindings=())
    return LaunchPlan(executables={"e": executable},
                      entries={"f": EntryPlan(arguments=0, transients_size=0, allocations=(), steps=(dispatch,))})


def test_kernels_are_kept_per_artifact_not_per_plan_address():
    """Plans of different artifacts, each freed before the next is read (as
    the bounded plan cache releases them), often land at the same address:
    each must still launch its own code."""
    driver = RecordingDriver()
    launcher = GpuLauncher(0, driver)
    for n in range(1, 41):
        image = f"ptx of N={n}\0".encode()
        spec = Specialization(LAYERNORM_FORWARD, "f32", None, n)
        bound = launcher.bind(spec, plan_with(image), "f", {}, {}, ())
        assert bound.launches[0].kernel.function == (image, "k")
        del bound
        gc.collect()
    # The same artifact read again (a new plan object) reuses its loaded module.
    spec = Specialization(LAYERNORM_FORWARD, "f32", None, 1)
    assert launcher.bind(spec, plan_with(b"ptx of N=1\0"), "f", {}, {}, ()).launches[0].kernel.function[0] == \
        b"ptx of N=1\0"
    assert len(driver.loaded) == 40


class FakeLibrary:
    """Every function of a driver API as a recorder returning success."""

    def __init__(self, api):
        self.api, self.calls = api, []
        for role, name in api.calls.items():
            if name is not None:
                setattr(self, name, self._recorder(role))

    def _recorder(self, role):
        def call(*args):
            self.calls.append((role, args))
            return None if role == "error_name" and self.api is HIP else 0
        return call


def launched(library):
    """(grid, block, shared memory, binding addresses, constants) of each recorded kernel launch."""
    found = []
    for role, args in library.calls:
        if role == "launch":
            function, gx, gy, gz, bx, by, bz, shared, stream, params, extra = args
            found.append(((gx, gy, gz), (bx, by, bz), shared, params))
    return found


def plan_for(fmt: str, shared_memory: int) -> LaunchPlan:
    """One dispatch of a 2-binding, 1-constant kernel, then a copy from the transients into argument 1."""
    kernel = Kernel(name="k", module=0, block=(256, 1, 1), shared_memory=shared_memory, constants=1, bindings=2)
    executable = Executable(format=fmt, images=(b"image\0",), kernels={"k": kernel})
    dispatch = Dispatch(executable="e", kernel="k", grid=(["dim", 0, 0], 1, 1), constants=(7,),
                        bindings=((["arg", 0], 0), (["transients"], 64)))
    copy = Copy(source=(["transients"], 64), target=(["arg", 1], 16), length=["mul.i64", ["dim", 0, 0], 4])
    return LaunchPlan(executables={"e": executable},
                      entries={"f": EntryPlan(arguments=2, transients_size=1024, allocations=(), steps=(dispatch, copy))})


@pytest.mark.parametrize("api", [CUDA, HIP], ids=lambda a: a.name)
def test_a_plan_is_launched_through_either_driver_api_with_its_abi(api):
    """Bindings as 64-bit addresses plus offsets, then the 32-bit constants;
    dynamic shared memory from the export on CUDA, none on HIP (as IREE's
    hip driver launches); copies as device-to-device async copies."""
    library = FakeLibrary(api)
    launcher = GpuLauncher(0, GpuDriver(api, lib=library))
    spec = Specialization(LAYERNORM_FORWARD, "f32", None, 8)
    bound = launcher.bind(spec, plan_for(api.executable_format, 4096), "f", {0: (5, 8), 1: (5, 8)}, {}, (0, 1))
    assert bound.transients == 1024
    library.calls.clear()
    launcher.launch(bound, [0x10000, 0x20000, 0x30000], stream=0x99)
    ((grid, block, shared, params),) = launched(library)
    assert grid == (5, 1, 1) and block == (256, 1, 1)
    assert shared == (4096 if api is CUDA else 0)
    pointers = [ctypes.cast(params[i], ctypes.POINTER(ctypes.c_uint64)).contents.value for i in range(2)]
    assert pointers == [0x10000, 0x30000 + 64]
    assert ctypes.cast(params[2], ctypes.POINTER(ctypes.c_uint32)).contents.value == 7
    (copy,) = [args for role, args in library.calls if role == "copy"]
    assert copy == (0x20000 + 16, 0x30000 + 64, 5 * 4, 0x99)


def test_a_launcher_refuses_another_apis_executables():
    launcher = GpuLauncher(0, GpuDriver(HIP, lib=FakeLibrary(HIP)))
    spec = Specialization(LAYERNORM_FORWARD, "f32", None, 8)
    with pytest.raises(GpuError, match="cuda-nvptx-fb; the HIP launcher loads rocm-hsaco-fb"):
        launcher.bind(spec, plan_for("cuda-nvptx-fb", 0), "f", {0: (5, 8), 1: (5, 8)}, {}, (0, 1))


def test_a_failed_launch_names_the_call_and_the_error():
    library = FakeLibrary(CUDA)
    driver = GpuDriver(CUDA, lib=library)
    launcher = GpuLauncher(0, driver)
    bound = launcher.bind(Specialization(LAYERNORM_FORWARD, "f32", None, 8), plan_for("cuda-nvptx-fb", 0), "f",
                          {0: (5, 8), 1: (5, 8)}, {}, (0, 1))
    library.cuLaunchKernel = lambda *args: 1  # CUDA_ERROR_INVALID_VALUE
    driver.launch_kernel = library.cuLaunchKernel
    with pytest.raises(GpuError, match=r"cuLaunchKernel of k \(grid \(5, 1, 1\), block \(256, 1, 1\)\) failed"):
        launcher.launch(bound, [1, 2, 3], stream=0)


class Buffer:
    """What DirectRunner takes of a tensor: its shape and device address."""

    def __init__(self, shape, address):
        self.shape, self.address = shape, address

    def data_ptr(self):
        return self.address


def test_a_rocm_artifacts_plan_runs_through_hip(tmp_path):
    """A real gfx942 forward artifact: its plan's HSACO is loaded through HIP
    and its one dispatch launched with M's grid, shared memory 0."""
    if compiler.compiler_version() is None:
        pytest.skip("iree-base-compiler is not installed")
    library = FakeLibrary(HIP)
    runner = DirectRunner(0, target_for("hip", "gfx942"), static_shapes=True, store=ArtifactStore(tmp_path),
                          driver=GpuDriver(HIP, lib=library))
    m, n = 37, 512
    inputs = (Buffer((m, n), 0x1000_0000), Buffer((n,), 0x2000_0000), Buffer((n,), 0x3000_0000))
    outputs = (Buffer((m, n), 0x4000_0000), Buffer((m,), 0x5000_0000), Buffer((m,), 0x6000_0000))
    allocated = []
    runner.run(LAYERNORM_FORWARD, "layernorm_forward", "f32", inputs, outputs, {"eps": 1e-5},
               lambda nbytes: allocated.append(nbytes) or Buffer((nbytes,), 0x7000_0000), stream=0x55)
    assert [role for role, _ in library.calls].count("load") == 1
    ((grid, block, shared, params),) = launched(library)
    assert grid == (m, 1, 1) and shared == 0 and block[0] > 0
    addresses = {ctypes.cast(params[i], ctypes.POINTER(ctypes.c_uint64)).contents.value for i in range(6)}
    assert addresses == {b.address for b in inputs + outputs}
