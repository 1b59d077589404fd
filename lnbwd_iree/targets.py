"""Compilation targets: which IREE backend and chip an artifact is built for,
and which runtime drivers can run it."""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Target:
    backend: str  # IREE HAL target backend
    chip: str  # GPU architecture, or "host"/"generic" for CPU-like backends
    drivers: tuple[str, ...]  # runtime drivers able to run the artifact

    @property
    def is_gpu(self) -> bool:
        return self.backend in ("cuda", "rocm", "vulkan-spirv")

    @property
    def name(self) -> str:
        return f"{self.backend}-{self.chip}"

    @property
    def has_launch_plans(self) -> bool:
        """Whether its artifacts come with a launch plan (``lnbwd_iree.launch_plan``):
        the backends whose kernels a caller's stream can launch directly."""
        return self.backend in ("cuda", "rocm")

    def flags(self) -> tuple[str, ...]:
        # async-external: entry points take wait/signal fences, so calls can be
        # queued back to back with no host wait between them (runtime.py).
        flags = [f"--iree-hal-target-backends={self.backend}", "--iree-execution-model=async-external"]
        if self.is_gpu:
            # The two row reductions and dX in one dispatch: one read of each
            # row of dY and X from memory instead of two. On llvm-cpu the fused
            # dispatch measured 2.7x slower (4096x1024 f32), so CPUs go without.
            flags.append("--iree-dispatch-creation-enable-aggressive-fusion")
        else:
            # IREE demotes f64 to f32 by default; f64 kernels must stay f64.
            flags.append("--iree-input-demote-f64-to-f32=false")
        if self.backend == "rocm":
            flags.append(f"--iree-rocm-target={self.chip}")
        elif self.backend == "cuda":
            flags.append(f"--iree-cuda-target={self.chip}")
        elif self.backend == "llvm-cpu":
            flags += [f"--iree-llvmcpu-target-cpu={self.chip}"]
        return tuple(flags)

    @property
    def compute_units(self) -> int | None:
        """Streaming multiprocessors (CUDA) or compute units (ROCm) of the chip
        this target's artifacts are sized for (COMPUTE_UNITS), None for CPUs."""
        return COMPUTE_UNITS.get(self.chip) if self.is_gpu else None

    @property
    def subgroup_size(self) -> int:
        """Lanes per subgroup the GPU schedules assume: wave64 on CDNA (gfx9), else 32."""
        return 64 if self.chip.startswith("gfx9") else 32

    def check_dtype(self, dtype: str) -> None:
        """Raises TypeError for a dtype this backend cannot compile."""
        if (self.backend, dtype) in UNSUPPORTED_DTYPES:
            raise TypeError(f"{dtype} is not supported on {self.name}: {UNSUPPORTED_DTYPES[self.backend, dtype]}")

    def identity(self) -> str:
        """What besides the flags decides the artifact's code: for llvm-cpu
        "host", the CPU the compiler ran on, since "host" means that machine."""
        if self.backend == "llvm-cpu" and self.chip == "host":
            return f"{self.name}:{host_cpu_fingerprint()}"
        return self.name


def host_cpu_fingerprint() -> str:
    """A short hash of this machine's architecture and CPU feature flags."""
    flags = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(("flags", "Features", "model name")):
                flags += line
    text = f"{platform.machine()}|{flags}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


_F64_IS_FOR_CPUS = "f64 exists for gradchecks on CPUs; GPU schedules are written for f32 and 16-bit data"
UNSUPPORTED_DTYPES = {
    ("vmvx", "f16"): "IREE 3.13's vmvx backend cannot lower arith.extf f16 -> f32",
    ("cuda", "f64"): _F64_IS_FOR_CPUS,
    ("rocm", "f64"): _F64_IS_FOR_CPUS,
    ("vulkan-spirv", "f64"): _F64_IS_FOR_CPUS,
}

ROCM_CHIPS = ("gfx942", "gfx90a", "gfx1100")
# Known figures of the chips, used to size GPU grids (not queried: artifacts
# are built where no GPU may exist). CUDA artifacts are sm_80/sm_89 PTX run
# on the H100 (132 SMs; IREE 3.13 has no sm_90 target). gfx90a: one MI250
# GCD, the unit a HIP device is (the card has 2 x 104 CUs). gfx1100: RDNA3's
# 48 WGPs (96 CUs in CU mode), wave32. A chip not listed here gets the
# designs that need no such figure (the backward's two passes).
COMPUTE_UNITS = {"sm_80": 132, "sm_89": 132, "gfx942": 304, "gfx90a": 104, "gfx1100": 48}
# IREE 3.13 has no sm_90 target ("missing GPU target"); sm_80/sm_89 PTX runs on Hopper.
CUDA_CHIPS = ("sm_80", "sm_89")

LLVM_CPU_HOST = Target("llvm-cpu", "host", ("local-task", "local-sync"))
VMVX = Target("vmvx", "generic", ("local-task", "local-sync"))

# Everything `lnbwd-iree compile` builds.
TARGET_MATRIX: tuple[Target, ...] = (
    *(Target("rocm", chip, ("hip",)) for chip in ROCM_CHIPS),
    *(Target("cuda", chip, ("cuda",)) for chip in CUDA_CHIPS),
    LLVM_CPU_HOST,
    VMVX,
)

# The target a runtime driver uses when the caller names no chip.
DEFAULT_CHIP = {"hip": "gfx942", "cuda": "sm_80", "vulkan": "generic"}

DRIVER_BACKEND = {
    "local-task": "llvm-cpu",
    "local-sync": "llvm-cpu",
    "cuda": "cuda",
    "hip": "rocm",
    "vulkan": "vulkan-spirv",
}
LOCAL_TARGETS = {"llvm-cpu": LLVM_CPU_HOST, "vmvx": VMVX}
# The backends whose artifacts each driver runs, its default first.
DRIVER_BACKENDS = {
    driver: (backend, "vmvx") if driver.startswith("local") else (backend,)
    for driver, backend in DRIVER_BACKEND.items()
}


def target_for(driver: str, chip: str | None = None, backend: str | None = None) -> Target:
    """The target whose artifacts run on ``driver``.

    ``backend`` picks among backends a driver can run (``vmvx`` on the local
    drivers); ``chip`` picks the GPU architecture (default: ``DEFAULT_CHIP``)."""
    if driver not in DRIVER_BACKEND:
        raise ValueError(f"unknown device driver {driver!r}; expected one of {sorted(DRIVER_BACKEND)}")
    runnable = DRIVER_BACKENDS[driver]
    backend = backend or runnable[0]
    if backend not in runnable:
        where = [d for d, backends in DRIVER_BACKENDS.items() if backend in backends]
        problem = f"runs on {' or '.join(where)}, not {driver!r}" if where else "is unknown"
        raise ValueError(f"backend {backend!r} {problem}; {driver!r} runs {' or '.join(runnable)}")
    if backend in LOCAL_TARGETS:
        target = LOCAL_TARGETS[backend]
        if chip not in (None, target.chip):
            raise ValueError(
                f"chip={chip!r} does not apply to {driver!r}: {target.name} builds for "
                + ("the CPU it is compiled on" if backend == "llvm-cpu" else "IREE's portable VM")
                + "; chip names a GPU architecture for cuda or hip"
            )
        return target
    return Target(backend, chip or DEFAULT_CHIP[driver], (driver,))
