"""Static resource report of ROCm artifacts, read from IREE's AMDGPU assembly.

No AMD GPU exists where this project is built, so what can be checked is
what the compiler decided: registers, LDS, scratch (private segment) and
spills per kernel, and the occupancy those registers allow."""

from __future__ import annotations

import re
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from .compiler import compile_spec
from .specialization import Specialization
from .targets import Target, chip_family

_FIELDS = {
    "name": str,
    "vgpr_count": int,
    "agpr_count": int,
    "sgpr_count": int,
    "vgpr_spill_count": int,
    "sgpr_spill_count": int,
    "group_segment_fixed_size": int,  # LDS bytes
    "private_segment_fixed_size": int,  # scratch bytes per lane
    "wavefront_size": int,
    "max_flat_workgroup_size": int,
}


# RDNA chips have no accumulation registers, and their metadata no .agpr_count.
_OPTIONAL = {"agpr_count": 0}


@dataclass(frozen=True)
class KernelResources:
    name: str
    vgpr_count: int
    agpr_count: int
    sgpr_count: int
    vgpr_spill_count: int
    sgpr_spill_count: int
    group_segment_fixed_size: int
    private_segment_fixed_size: int
    wavefront_size: int
    max_flat_workgroup_size: int

    @property
    def spills(self) -> bool:
        return bool(self.vgpr_spill_count or self.sgpr_spill_count or self.private_segment_fixed_size)

    def waves_per_simd(self, chip: str) -> int:
        """Occupancy as the register file allows it (an upper bound: LDS and
        workgroup size can lower it): the chip family's registers per lane
        and most waves per SIMD (targets.CHIP_FAMILIES), in granules of 8."""
        family = chip_family("rocm", chip)
        used = max(8, -(-(self.vgpr_count + self.agpr_count) // 8) * 8)
        return min(family.max_waves_per_simd, family.registers_per_lane // used)


def parse_metadata(assembly: str) -> list[KernelResources]:
    """The per-kernel entries of the amdhsa.kernels metadata in a .rocmasm file."""
    metadata = assembly[assembly.index("amdhsa.kernels:") :]
    kernels = []
    # Kernel entries are the list items indented by two spaces; deeper "- ."
    # items are their arguments.
    for block in re.split(r"\n  - (?=\.)", metadata)[1:]:
        values = {}
        for key, kind in _FIELDS.items():
            match = re.search(rf"^\s*\.{key}:\s+(\S+)", block, re.MULTILINE)
            if match is not None:
                values[key] = kind(match.group(1))
            elif key in _OPTIONAL:
                values[key] = _OPTIONAL[key]
            else:
                raise ValueError(f"kernel metadata without .{key}:\n{block[:500]}")
        kernels.append(KernelResources(**values))
    return kernels


def kernel_resources(spec: Specialization, target: Target) -> list[KernelResources]:
    """Compiles ``spec`` for a ROCm ``target`` and reads its kernels' resources."""
    with tempfile.TemporaryDirectory() as tmp:
        compile_spec(spec, target, [f"--iree-hal-dump-executable-intermediates-to={tmp}"])
        return [k for asm in sorted(Path(tmp).glob("*.rocmasm")) for k in parse_metadata(asm.read_text())]


def report_rows(spec: Specialization, target: Target) -> list[dict]:
    return [
        {
            "kernel": spec.stem,
            "chip": target.chip,
            **asdict(k),
            "waves_per_simd": k.waves_per_simd(target.chip),
            "spills": k.spills,
        }
        for k in kernel_resources(spec, target)
    ]
