"""Every rendered source and transform library of every registered kernel, pinned by hash per
(target, kernel, dtype) over a set of shapes: a refactoring of the op seam
must leave them byte-identical. A deliberate change of a template or a design
rule updates the pins: python tests/test_pinned_sources.py --update."""

import hashlib
import json
import sys
from pathlib import Path

import pytest

from lnbwd_iree.kernels import DTYPES, KERNELS, Specialization
from lnbwd_iree.targets import TARGET_MATRIX, Target

PINS = Path(__file__).parent / "data" / "source_hashes.json"
SHAPES = [(None, None), (None, 4096), (8192, 4096), (32768, 1024), (16384, 8192), (4096, 16384), (65536, 768),
          (4096, 1024), (1024, 512), (7, 33), (8, 16), (4096, 65536), (2048, 2048), (16, 512)]
TARGETS = (*TARGET_MATRIX, Target("vulkan-spirv", "generic", ("vulkan",)), Target("rocm", "gfx1201", ("hip",)))


def hashes() -> dict[str, str]:
    out = {}
    for target in TARGETS:
        for kernel in KERNELS:
            for dtype in DTYPES:
                digest = hashlib.sha256()
                for m, n in SHAPES:
                    spec = Specialization(kernel, dtype, m, n)
                    digest.update(f"{spec.stem}\0{spec.source(target)}\0{spec.transform_library(target)}\0".encode())
                out[f"{target.name} {kernel.name} {dtype}"] = digest.hexdigest()
    return out


def test_sources_are_pinned():
    pinned = json.loads(PINS.read_text())
    current = hashes()
    changed = sorted(key for key in pinned.keys() | current.keys() if pinned.get(key) != current.get(key))
    if changed:
        pytest.fail(f"rendered sources changed for {changed}; if deliberate: python {__file__} --update")


if __name__ == "__main__" and sys.argv[1:] == ["--update"]:
    PINS.write_text(json.dumps(hashes(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {PINS}")
