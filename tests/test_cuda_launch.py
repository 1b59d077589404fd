"""CudaLauncher's loaded kernels, with a stand-in for the CUDA driver (no GPU needed)."""

import ctypes
import gc

from lnbwd_iree.cuda_launch import CudaLauncher
from lnbwd_iree.kernels import LAYERNORM_FORWARD, Specialization
from lnbwd_iree.launch_plan import Dispatch, EntryPlan, Executable, Kernel, LaunchPlan


class RecordingDriver:
    """Loads "modules" that are their images, and functions that name their module."""

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
    launcher = CudaLauncher(0, driver=driver)
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
