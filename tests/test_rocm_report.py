"""gfx942 artifacts compile with no spills and no scratch (no AMD GPU here to run them)."""

import pytest

from lnbwd_iree.kernels import LAYERNORM_BACKWARD, LAYERNORM_FORWARD, Specialization
from lnbwd_iree.rocm_report import kernel_resources, parse_metadata
from lnbwd_iree.targets import Target

GFX942 = Target("rocm", "gfx942", ("hip",))


@pytest.mark.parametrize(
    "spec",
    [
        Specialization(LAYERNORM_BACKWARD, "f32", 8192, 4096),
        Specialization(LAYERNORM_BACKWARD, "bf16", 32768, 1024),
        Specialization(LAYERNORM_BACKWARD, "bf16", 8192, 4096),
        Specialization(LAYERNORM_BACKWARD, "f32", 16384, 8192),
        Specialization(LAYERNORM_BACKWARD, "bf16", 4096, 16384),
        Specialization(LAYERNORM_BACKWARD, "f16", 65536, 768),
        Specialization(LAYERNORM_BACKWARD, "f32"),
        Specialization(LAYERNORM_FORWARD, "bf16"),
        # The forward's widest register-held rows (16384 elements) and a row walked in steps.
        Specialization(LAYERNORM_FORWARD, "f32", None, 16384),
        Specialization(LAYERNORM_FORWARD, "bf16", None, 65536),
    ],
    ids=lambda s: s.stem,
)
def test_gfx942_kernels_do_not_spill(spec, iree_compiler):
    kernels = kernel_resources(spec, GFX942)
    assert kernels, "no kernels found in the dumped assembly"
    for k in kernels:
        assert k.wavefront_size == 64
        assert not k.spills, f"{k.name}: {k.vgpr_spill_count} VGPR / {k.sgpr_spill_count} SGPR spills, scratch {k.private_segment_fixed_size} B"
        assert k.waves_per_simd("gfx942") >= 1


def test_metadata_parser_reads_spills():
    text = """amdhsa.kernels:
  - .agpr_count:     0
    .group_segment_fixed_size: 56
    .max_flat_workgroup_size: 256
    .name:           a_dispatch_0
    .private_segment_fixed_size: 16
    .sgpr_count:     30
    .sgpr_spill_count: 0
    .vgpr_count:     300
    .vgpr_spill_count: 4
    .wavefront_size: 64
"""
    (k,) = parse_metadata(text)
    assert (k.vgpr_count, k.vgpr_spill_count, k.private_segment_fixed_size) == (300, 4, 16)
    assert k.spills and k.waves_per_simd("gfx942") == 1
