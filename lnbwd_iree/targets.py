"""Compilation targets: which IREE backend and chip an artifact is built for,
and which runtime drivers can run it.

Two tables hold the facts the rest of the package reads: ``DRIVERS`` (each
runtime driver, the backends whose artifacts it runs and its default chip)
and ``CHIP_FAMILIES`` (per GPU chip family: subgroup size, register limits,
and its known chips' SM/CU counts). Their keys are checked against each
other, the dtype table and the shipped targets at import."""

from __future__ import annotations

import hashlib
import platform
from dataclasses import dataclass
from pathlib import Path

from .dtypes import TABLE as DTYPE_TABLE


@dataclass(frozen=True)
class Target:
    backend: str  # IREE HAL target backend
    chip: str  # GPU architecture, or "host"/"generic" for CPU-like backends
    drivers: tuple[str, ...]  # runtime drivers able to run the artifact (each must run ``backend``: DRIVERS)

    def __post_init__(self):
        wrong = [d for d in self.drivers if d not in DRIVERS or self.backend not in DRIVERS[d].backends]
        if wrong:
            runners = list(drivers_of(self.backend))
            raise ValueError(f"{self.backend} artifacts do not run on {wrong}: they run on {runners or 'no driver'}")

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
            # dispatch measured slower (docs/performance.md), so CPUs go without.
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
    def family(self) -> ChipFamily:
        """The GPU chip family of ``chip`` (CHIP_FAMILIES); ValueError for CPU
        targets and chip names no family of the backend takes."""
        return chip_family(self.backend, self.chip)

    @property
    def compute_units(self) -> int | None:
        """Streaming multiprocessors (CUDA) or compute units (ROCm) of the chip
        this target's artifacts are sized for, None for CPUs and chips
        without known figures."""
        return self.family.compute_units.get(self.chip) if self.is_gpu else None

    @property
    def subgroup_size(self) -> int:
        """Lanes per subgroup the GPU schedules assume (the chip family's)."""
        return self.family.subgroup_size

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


@dataclass(frozen=True)
class ChipFamily:
    """GPU chips whose names start with ``prefix`` on ``backend``: what the
    schedules and the ROCm report assume of them."""

    backend: str
    prefix: str
    subgroup_size: int  # lanes per subgroup (warp, wavefront)
    # ROCm register file: VGPRs (+ AGPRs) per lane and the most waves per
    # SIMD they allow; None where no report reads them.
    registers_per_lane: int | None
    max_waves_per_simd: int | None
    # SMs (CUDA) or CUs (ROCm) of the chips whose figures are known, used to
    # size GPU grids (not queried: artifacts are built where no GPU may
    # exist). A chip not listed gets the designs that need no such figure
    # (the backward's two passes).
    compute_units: dict[str, int]


CHIP_FAMILIES = (
    # CUDA artifacts are sm_80/sm_89 PTX run on the H100 (132 SMs; IREE 3.13
    # has no sm_90 target).
    ChipFamily("cuda", "sm_", 32, None, None, {"sm_80": 132, "sm_89": 132}),
    # CDNA, wave64: 512 VGPRs + AGPRs per lane, at most 8 waves. gfx90a is
    # one MI250 GCD, the unit a HIP device is (the card has 2 x 104 CUs).
    ChipFamily("rocm", "gfx9", 64, 512, 8, {"gfx942": 304, "gfx90a": 104}),
    # RDNA, wave32: 1536 VGPRs per lane (RDNA3), at most 16 waves; gfx1100's
    # 48 WGPs (96 CUs in CU mode).
    ChipFamily("rocm", "gfx1", 32, 1536, 16, {"gfx1100": 48}),
    ChipFamily("vulkan-spirv", "", 32, None, None, {}),
)


def chip_family(backend: str, chip: str) -> ChipFamily:
    """The family of ``chip`` on ``backend``; ValueError naming the known prefixes otherwise."""
    family = next((f for f in CHIP_FAMILIES if f.backend == backend and chip.startswith(f.prefix)), None)
    if family is None:
        prefixes = [f.prefix + "*" for f in CHIP_FAMILIES if f.backend == backend]
        raise ValueError(
            f"chip {chip!r} is no {backend} GPU chip known here" + (f" (known: {', '.join(prefixes)})" if prefixes else "")
        )
    return family


@dataclass(frozen=True)
class Driver:
    """A runtime driver: the backends whose artifacts it runs (its default
    first) and, for GPU drivers, the chip it targets when the caller names none."""

    name: str
    backends: tuple[str, ...]
    default_chip: str | None = None


DRIVERS = {
    d.name: d
    for d in (
        Driver("local-task", ("llvm-cpu", "vmvx")),
        Driver("local-sync", ("llvm-cpu", "vmvx")),
        Driver("cuda", ("cuda",), "sm_80"),
        Driver("hip", ("rocm",), "gfx942"),
        Driver("vulkan", ("vulkan-spirv",), "generic"),
    )
}


def drivers_of(backend: str) -> tuple[str, ...]:
    """The drivers that run ``backend``'s artifacts."""
    return tuple(d.name for d in DRIVERS.values() if backend in d.backends)


_F64_IS_FOR_CPUS = "f64 exists for gradchecks on CPUs; GPU schedules are written for f32 and 16-bit data"
UNSUPPORTED_DTYPES = {
    ("vmvx", "f16"): "IREE 3.13's vmvx backend cannot lower arith.extf f16 -> f32",
    ("cuda", "f64"): _F64_IS_FOR_CPUS,
    ("rocm", "f64"): _F64_IS_FOR_CPUS,
    ("vulkan-spirv", "f64"): _F64_IS_FOR_CPUS,
}

ROCM_CHIPS = ("gfx942", "gfx90a", "gfx1100")
# IREE 3.13 has no sm_90 target ("missing GPU target"); sm_80/sm_89 PTX runs on Hopper.
CUDA_CHIPS = ("sm_80", "sm_89")

LLVM_CPU_HOST = Target("llvm-cpu", "host", drivers_of("llvm-cpu"))
VMVX = Target("vmvx", "generic", drivers_of("vmvx"))
# The local drivers' targets by backend: they build for no GPU chip.
LOCAL_TARGETS = {"llvm-cpu": LLVM_CPU_HOST, "vmvx": VMVX}

# Everything `lnbwd-iree compile` builds.
TARGET_MATRIX: tuple[Target, ...] = (
    *(Target("rocm", chip, drivers_of("rocm")) for chip in ROCM_CHIPS),
    *(Target("cuda", chip, drivers_of("cuda")) for chip in CUDA_CHIPS),
    LLVM_CPU_HOST,
    VMVX,
)


def check_tables() -> None:
    """Raises RuntimeError unless the tables' keys agree: every backend named
    is run by a driver, every dtype named is in the dtype table, every
    shipped or default GPU chip has a family (with known figures on CUDA and
    ROCm), and a driver has a default chip exactly when it runs a GPU backend."""
    problems = []
    backends = {b for d in DRIVERS.values() for b in d.backends}
    for backend, dtype in UNSUPPORTED_DTYPES:
        if backend not in backends:
            problems.append(f"UNSUPPORTED_DTYPES names backend {backend!r}, which no driver runs")
        if dtype not in DTYPE_TABLE:
            problems.append(f"UNSUPPORTED_DTYPES names dtype {dtype!r}, which dtypes.TABLE lacks")
    for family in CHIP_FAMILIES:
        if family.backend not in backends:
            problems.append(f"chip family {family.prefix}* names backend {family.backend!r}, which no driver runs")
        for chip in family.compute_units:
            if not chip.startswith(family.prefix):
                problems.append(f"chip {chip!r} is listed under family {family.prefix}*")
    chips = [(t.backend, t.chip) for t in TARGET_MATRIX if t.is_gpu]
    chips += [(d.backends[0], d.default_chip) for d in DRIVERS.values() if d.default_chip is not None]
    for backend, chip in chips:
        try:
            family = chip_family(backend, chip)
        except ValueError as e:
            problems.append(str(e))
            continue
        if backend in ("cuda", "rocm") and chip not in family.compute_units:
            problems.append(f"shipped or default chip {chip!r} ({backend}) has no known compute units")
    for driver in DRIVERS.values():
        if (driver.default_chip is None) != all(b in LOCAL_TARGETS for b in driver.backends):
            problems.append(f"driver {driver.name!r} must have a default chip exactly when it runs a GPU backend")
    if problems:
        raise RuntimeError("lnbwd_iree.targets: tables disagree: " + "; ".join(problems))


check_tables()


def target_for(driver: str, chip: str | None = None, backend: str | None = None) -> Target:
    """The target whose artifacts run on ``driver``.

    ``backend`` picks among backends a driver can run (``vmvx`` on the local
    drivers); ``chip`` picks the GPU architecture (default: the driver's
    ``default_chip``)."""
    if driver not in DRIVERS:
        raise ValueError(f"unknown device driver {driver!r}; expected one of {sorted(DRIVERS)}")
    runnable = DRIVERS[driver].backends
    backend = backend or runnable[0]
    if backend not in runnable:
        where = drivers_of(backend)
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
    return Target(backend, chip or DRIVERS[driver].default_chip, (driver,))
