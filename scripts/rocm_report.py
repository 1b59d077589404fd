"""Writes benchmarks/rocm_report.{json,md}: the resources of every shipped ROCm
configuration (the benchmark shapes, static, plus the dynamic artifacts) for
gfx942, gfx90a and gfx1100. Fails if any kernel spills or uses scratch.

python scripts/rocm_report.py
"""

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from lnbwd_iree.kernels import DTYPES, KERNELS, Specialization
from lnbwd_iree.rocm_report import report_rows
from lnbwd_iree.targets import ROCM_CHIPS, Target

SHAPES = [(8192, 4096), (32768, 1024), (16384, 8192), (4096, 16384), (65536, 768), (1024, 512), (4096, 1024)]

jobs = [
    (spec, Target("rocm", chip, ("hip",)))
    for chip in ROCM_CHIPS
    for kernel in KERNELS
    for dtype in DTYPES
    for spec in dict.fromkeys(Specialization.serving(kernel, dtype, *shape) for shape in [(None, None), *SHAPES])
]


with ThreadPoolExecutor(2) as pool:
    rows = [row for rows in pool.map(lambda job: report_rows(*job), jobs) for row in rows]

out = Path(__file__).resolve().parent.parent / "benchmarks"
(out / "rocm_report.json").write_text(json.dumps(rows, indent=1))
lines = [
    "# ROCm resource report (IREE 3.13, from the dumped AMDGPU assembly)",
    "",
    "Per kernel: VGPRs/AGPRs/SGPRs, LDS bytes, scratch bytes per lane, spill counts, and the",
    "waves per SIMD the registers allow (CDNA: 512 regs/lane, <= 8 waves; RDNA3: 1536, <= 16).",
    "",
    "| chip | artifact | dispatch | wave | wg | VGPR | AGPR | SGPR | LDS B | scratch B | spills | waves/SIMD |",
    "|---|---|---|---|---|---|---|---|---|---|---|---|",
]
for r in rows:
    dispatch = r["name"].split("_dispatch_")[-1][:40]
    lines.append(
        f"| {r['chip']} | {r['kernel']} | {dispatch} | {r['wavefront_size']} | {r['max_flat_workgroup_size']} "
        f"| {r['vgpr_count']} | {r['agpr_count']} | {r['sgpr_count']} | {r['group_segment_fixed_size']} "
        f"| {r['private_segment_fixed_size']} | {r['vgpr_spill_count'] + r['sgpr_spill_count']} | {r['waves_per_simd']} |"
    )
(out / "rocm_report.md").write_text("\n".join(lines) + "\n")
spilling = [r for r in rows if r["spills"]]
print(f"{len(jobs)} artifacts, {len(rows)} kernels, {len(spilling)} with spills or scratch")
for r in spilling:
    print(f"  SPILL {r['chip']} {r['kernel']} {r['name']}")
sys.exit(1 if spilling else 0)
