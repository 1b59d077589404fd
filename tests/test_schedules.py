"""Which design and schedule each specialisation renders (no device needed)."""

import re

import pytest

from lnbwd_iree import row_block_pipeline
from lnbwd_iree.kernels import KERNELS, LAYERNORM_BACKWARD, LAYERNORM_FORWARD, RMSNORM_BACKWARD, Specialization
from lnbwd_iree.ops import layernorm, schedules
from lnbwd_iree.targets import TARGET_MATRIX, Target, target_for

CUDA = target_for("cuda", "sm_80")
GFX942 = Target("rocm", "gfx942", ("hip",))
GFX1100 = Target("rocm", "gfx1100", ("hip",))
CPU = target_for("local-task")


@pytest.mark.parametrize(
    "dtype, shape, target, expected",
    [
        # (G, R, S): blocks, rows per block, subgroups per workgroup; 16
        # elements of a row per lane, blocks of >= 32 rows.
        ("f32", (8192, 4096), CUDA, (256, 32, 8)),
        ("f32", (32768, 1024), CUDA, (1024, 32, 2)),
        # At most 8 workgroups per SM: 1024 blocks of 64 rows, not 2048 of 32.
        ("f32", (65536, 768), CUDA, (1024, 64, 1)),
        # MI300X's 304 CUs take up to 2048 workgroups.
        ("f32", (65536, 768), GFX942, (2048, 32, 1)),
        ("bf16", (32768, 1024), CUDA, (1024, 32, 2)),
        ("bf16", (8192, 4096), CUDA, (256, 32, 8)),
        # wave64: 64 lanes x 16 elements; a step of 64 lanes x 8 bf16 = 512
        # columns divides 1024, not 768.
        ("bf16", (32768, 1024), GFX942, (1024, 32, 1)),
        ("bf16", (65536, 768), GFX942, None),
        # Rows of 8192: 512-thread workgroups, at most 2^21 / N = 256 blocks,
        # 2^20 / N = 128 for 16-bit rows.
        ("f32", (16384, 8192), CUDA, (256, 64, 16)),
        ("bf16", (16384, 8192), CUDA, (128, 128, 16)),
        ("f32", (16384, 8192), GFX942, (256, 64, 8)),
        # Rows beyond 512 lanes x 16 elements keep two passes.
        ("f32", (4096, 16384), CUDA, None),
        ("bf16", (4096, 16384), CUDA, None),
        # Small shapes: fewer rows per block, so that 2^15 threads still run.
        ("f32", (4096, 1024), CUDA, (512, 8, 2)),
        ("bf16", (1024, 512), CUDA, (512, 2, 1)),
        # N must fill whole steps of lanes x 16-byte vectors; CPUs and
        # dynamic shapes keep two passes.
        ("f32", (96, 1000), CUDA, None),
        ("f32", (8192, 4096), CPU, None),
        # Chips without known SM/CU figures and Vulkan keep two passes.
        ("f32", (8192, 4096), Target("cuda", "sm_86", ("cuda",)), None),
        ("f32", (8192, 4096), Target("vulkan-spirv", "generic", ("vulkan",)), None),
        ("f32", (None, None), CUDA, None),
    ],
    ids=str,
)
def test_one_pass_is_chosen_where_it_measured_faster(dtype, shape, target, expected):
    spec = Specialization(LAYERNORM_BACKWARD, dtype, *shape)
    assert schedules.row_blocks(spec, target) == expected
    source = spec.source(target)
    assert ("flow.dispatch.region" in source) == (expected is not None)
    if expected is not None:
        blocks, rows, subgroups, rows_per_step = layernorm.step_blocks(spec, target)
        assert blocks * rows == spec.m
        assert f"tensor<{blocks}x{rows // rows_per_step}x{rows_per_step}x{spec.n}x{dtype}>" in source
        lanes = 64 if target.chip in ("gfx942", "gfx90a") else 32
        assert f"workgroup_size = [{lanes * subgroups}, 1, 1] subgroup_size = {lanes}" in source


@pytest.mark.parametrize(
    "dtype, shape, target, expected",
    [
        # (G, R, S, P): 16-bit rows of up to 512 lanes x one 16-byte vector
        # take 4 rows per step, 512 / threads workgroups per SM (one of 512
        # threads at 8192x4096), blocks of >= 32 rows.
        ("bf16", (8192, 4096), CUDA, (128, 64, 16, 4)),
        ("f16", (8192, 4096), CUDA, (128, 64, 16, 4)),
        ("bf16", (32768, 1024), CUDA, (512, 64, 4, 4)),
        ("bf16", (65536, 768), CUDA, (512, 128, 3, 4)),
        ("bf16", (8192, 4096), GFX942, (256, 32, 8, 4)),
        # Longer 16-bit rows (two vectors a lane): row_blocks' grid, 2 rows per step.
        ("bf16", (16384, 8192), CUDA, (128, 128, 16, 2)),
        # f32, and small M (blocks would fall under 32 rows): one row per step.
        ("f32", (8192, 4096), CUDA, (256, 32, 8, 1)),
        ("bf16", (4096, 1024), CUDA, (512, 8, 2, 1)),
        ("bf16", (4096, 16384), CUDA, None),
    ],
    ids=str,
)
def test_16_bit_rows_share_a_loop_step(dtype, shape, target, expected):
    spec = Specialization(LAYERNORM_BACKWARD, dtype, *shape)
    assert layernorm.step_blocks(spec, target) == expected


def test_partial_sum_schedule_needs_blocks_that_split_evenly():
    spec = Specialization(LAYERNORM_BACKWARD, "f32", 8192, 4096)
    assert "subgroup_basis = [[1, 8], [0, 1]]" in schedules.partial_sum_config(spec, 32, 256)
    assert "subgroup_basis = [[1, 2], [0, 1]]" in schedules.partial_sum_config(spec, 32, 64)
    assert schedules.partial_sum_config(spec, 32, 48) == ""


@pytest.mark.parametrize(
    "dtype, shape, target, sliced",
    [
        # One pass, and two passes with [G, 2, N] partials on GPUs: one scheduled op over both [G, N] slices.
        ("f32", (8192, 4096), CUDA, True),
        ("bf16", (8192, 4096), CUDA, True),
        ("f32", (4096, 16384), GFX942, True),
        # [2, N, G] partials (small shapes, or G >= 512), CPUs and dynamic N: one op over the whole.
        ("f32", (96, 1000), CUDA, False),
        ("f32", (8192, 4096), CPU, False),
        ("f32", (8192, None), CUDA, False),
    ],
    ids=str,
)
def test_final_sums_write_each_result_directly_on_gpus(dtype, shape, target, sliced):
    source = Specialization(LAYERNORM_BACKWARD, dtype, *shape).source(target)
    assert ("%dbeta_acc, %dgamma_acc = linalg.generic" in source) == sliced
    assert ("%col_sums = linalg.generic" in source) == (not sliced)


@pytest.mark.parametrize(
    "dtype, n, target, expected",
    [
        # (subgroups, step, rows): four 16-byte vectors of the row per thread, the whole row per step.
        ("f32", 4096, CUDA, (8, 4096, 1)),
        ("bf16", 4096, CUDA, (4, 4096, 1)),
        ("f32", 16384, CUDA, (32, 16384, 1)),
        ("f32", 768, CUDA, (1, 768, 1)),
        ("f32", 4096, GFX942, (4, 4096, 1)),
        # Rows over 16384 elements: steps of at most 16384 columns.
        ("f32", 65536, CUDA, (32, 16384, 1)),
        ("bf16", 65536, CUDA, (32, 16384, 1)),
        ("bf16", 65536, GFX942, (16, 16384, 1)),
        ("f32", 24576, CUDA, (32, 12288, 1)),
        # N must fill whole subgroup steps (wave64 x 8 bf16 = 512 does not divide 768);
        # CPUs and dynamic N keep IREE's choice.
        ("bf16", 768, GFX942, None),
        ("f32", 1000, CUDA, None),
        ("f32", 4096, CPU, None),
        ("f32", None, CUDA, None),
    ],
    ids=str,
)
def test_forward_schedule_holds_rows_in_registers(dtype, n, target, expected):
    spec = Specialization(LAYERNORM_FORWARD, dtype, None, n)
    assert schedules.forward_schedule(spec, target) == expected
    source = spec.source(target)
    assert ("compilation_info" in source) == (expected is not None)
    if expected is not None:
        subgroups, step, _ = expected
        lanes = 64 if target.chip in ("gfx942", "gfx90a") else 32
        assert f"workgroup_size = [{lanes * subgroups}, 1, 1] subgroup_size = {lanes}" in source
        assert source.count(f"partial_reduction = [0, {step}]") == 2
        assert f"serial = [0, {step}]" in source


def test_forward_artifacts_serve_every_m_and_the_backward_stays_per_shape():
    forward = Specialization.serving(LAYERNORM_FORWARD, "bf16", 8192, 4096)
    assert (forward.m, forward.n, forward.signature) == (None, 4096, "Dx4096xbf16")
    backward = Specialization.serving(LAYERNORM_BACKWARD, "bf16", 8192, 4096)
    assert (backward.m, backward.n) == (8192, 4096)
    assert Specialization.serving(LAYERNORM_FORWARD, "f32", None, None) == Specialization(LAYERNORM_FORWARD, "f32")


def test_forward_schedule_leaves_the_backward_statistics_to_iree():
    """row_statistics.mlir is shared: its schedule fields stay empty in the
    backward's recompute entry, whose dispatch has its own schedule."""
    source = Specialization(LAYERNORM_BACKWARD, "f32", 8192, 4096).source(CUDA)
    assert 'iterator_types = ["parallel", "reduction"]}\n      ins(%x, %pivot' in source
    assert 'iterator_types = ["parallel", "reduction"]}\n      ins(%x, %mean :' in source


@pytest.mark.parametrize(
    "dtype, shape, target",
    [("f32", (8192, 4096), CUDA), ("bf16", (32768, 1024), GFX942), ("f32", (4096, 1024), CUDA)],
    ids=str,
)
def test_one_pass_keeps_the_partials_in_registers(dtype, shape, target):
    """The one-pass dispatch runs the pass pipeline that turns its row loop
    into an scf.for (forall-to-for after the serial tiling level), and its
    transform library gives each op back the config IREE overwrote."""
    spec = Specialization(LAYERNORM_BACKWARD, dtype, *shape)
    source, library = spec.source(target), spec.transform_library(target)
    passes = row_block_pipeline.PASSES
    serial = next(i for i, p in enumerate(passes) if "tiling-level=serial" in p)
    assert "iree-codegen-forall-to-for" in passes[serial:]
    assert passes[0] == "iree-codegen-lowering-config-interpreter"
    assert f'#iree_codegen.pass_pipeline<"{row_block_pipeline.PIPELINE}">' in source
    assert 'lowering_strategy = "lnbwd_row_block_configs"' in source
    for role in ("fill", "row", "zero", "terms", "partials"):
        assert f'lnbwd_role = "{role}"' in source and f'lnbwd_role = "{role}"' in library
    vector = spec.vector
    # Row ops over (g, r, p, j); the terms and their partial sums over (g, k, j, r, p).
    assert f"thread = [0, 0, 0, {vector}]" in library and f"thread = [0, 2, {vector}, 0, 0]" in library
    assert "lowering_strategy" not in library  # the restored configs do not re-apply it


@pytest.mark.parametrize(
    "dtype, shape, target",
    [("f32", (96, 1000), CUDA), ("f32", (8192, 4096), CPU), ("f32", (None, None), CUDA)],
    ids=str,
)
def test_two_passes_need_no_transform_library(dtype, shape, target):
    spec = Specialization(LAYERNORM_BACKWARD, dtype, *shape)
    assert schedules.row_blocks(spec, target) is None
    assert spec.transform_library(target) == ""
    assert "pass_pipeline" not in spec.source(target)


def _row_loop_loads_before_first_barrier(ptx: str) -> int:
    """Global loads in the one-pass dispatch's step loop before its first
    barrier: the loop head is the label that the entry block's
    unconditional branch enters."""
    entry = ptx[ptx.index(".entry layernorm_backward_dispatch_0_") :]
    entry = entry[: entry.index("\n}\n")]
    head = entry.split("bra.uni", 1)[1].split(";", 1)[0].strip()
    body = entry[entry.index(f"\n{head}:") :]
    before = body[: body.index("bar.sync")]
    return before.count("ld.global.nc.")


@pytest.mark.parametrize("dtype, fused", [("bf16", True), ("f16", True), ("f32", False), ("f64", False)])
@pytest.mark.parametrize("shape", [(8192, 4096), (4096, 16384)], ids=str)
def test_16_bit_backward_takes_gamma_dy_as_fma_operands(dtype, fused, shape):
    """16-bit data: dX's and the second row sum's gamma * dY are fma
    operands (fewer registers with several rows a step); f32 and f64 keep
    products then differences, which measured faster in f32."""
    source = Specialization(LAYERNORM_BACKWARD, dtype, *shape).source(CPU if dtype == "f64" else CUDA)
    assert source.count("math.fma %gamma_w, %dy_w") == (2 if fused else 0)
    assert ("%t0 = arith.subf %g, %mean_g" in source) == (not fused)


@pytest.mark.parametrize("shape", [(8192, 4096), (4096, 16384)], ids=str)
def test_blocked_backward_sums_both_columns_in_one_dispatch(shape, tmp_path, iree_compiler):
    """One pass (8192x4096) and two passes (4096x16384) end in one final-sum
    kernel writing dbeta and dgamma (two single-result ops were two
    launches of ~6 us each)."""
    from lnbwd_iree import compiler

    spec = Specialization(LAYERNORM_BACKWARD, "bf16", *shape)
    compiler.compile_spec(spec, CUDA, [f"--iree-hal-dump-executable-files-to={tmp_path}"])
    (ptx,) = tmp_path.glob("*.ptx")
    kernels = re.findall(r"\.entry (layernorm_backward_dispatch_\w+)\(", ptx.read_text())
    one_pass = schedules.row_blocks(spec, CUDA) is not None
    assert len(kernels) == (2 if one_pass else 3), kernels
    assert sum("reduction_" + str(shape[1]) + "x" in k for k in kernels) == 1, kernels


@pytest.mark.parametrize("dtype, loads_x_first", [("bf16", True), ("f16", True), ("f32", False)])
def test_one_pass_loads_a_16_bit_row_before_its_first_reduction(dtype, loads_x_first, tmp_path, iree_compiler):
    """On 16-bit data each step issues the dY and X vector loads of all its
    rows and their mean and rstd (one load each) before the first workgroup
    reduction's barrier, so they are in flight together (before change 33,
    X was loaded after the first row sum: two memory latencies per row in
    sequence). f32 keeps the old order, which measured as fast or faster:
    only dY before the barrier."""
    from lnbwd_iree import compiler

    spec = Specialization(LAYERNORM_BACKWARD, dtype, 8192, 4096)
    blocks, rows, subgroups, rows_per_step = layernorm.step_blocks(spec, CUDA)
    compiler.compile_spec(spec, CUDA, [f"--iree-hal-dump-executable-files-to={tmp_path}"])
    (ptx,) = tmp_path.glob("*.ptx")
    per_row = 4096 // (32 * subgroups * spec.vector)  # 16-byte loads of a row's dY
    expected = 2 * rows_per_step * per_row + 2 if loads_x_first else per_row
    assert _row_loop_loads_before_first_barrier(ptx.read_text()) == expected


@pytest.mark.parametrize(
    "dtype, shape, target",
    [("f32", (8192, 4096), CUDA), ("bf16", (8192, 4096), CUDA), ("f16", (32768, 1024), CUDA),
     ("f32", (65536, 768), CUDA), ("bf16", (16384, 8192), CUDA), ("f32", (1024, 512), CUDA),
     ("f32", (16384, 8192), GFX942), ("bf16", (32768, 1024), GFX942), ("f32", (8192, 4096), GFX1100)],
    ids=str,
)
def test_rmsnorm_one_pass_holds_one_column_sum(dtype, shape, target):
    """RMSNorm's backward takes LayerNorm's one-pass grid wherever LayerNorm
    does, with [G, 1, N] partials (dgamma alone): one sum per thread and
    column in the thread tiles, half of LayerNorm's registers, and one
    final sum of the partials."""
    spec = Specialization(RMSNORM_BACKWARD, dtype, *shape)
    blocks, rows, subgroups = schedules.row_blocks(spec, target)
    assert (blocks, rows, subgroups) == schedules.row_blocks(Specialization(LAYERNORM_BACKWARD, dtype, *shape), target)
    source, library = spec.source(target), spec.transform_library(target)
    assert source.count("flow.dispatch.region") == 1
    assert f"tensor<{blocks}x{rows}x{spec.n}x{dtype}>" in source
    assert f"flow.dispatch.region -> (tensor<{blocks}x{rows}x{spec.n}x{dtype}>, tensor<{blocks}x1x{spec.n}xf32>)" in source
    lanes = target.subgroup_size
    assert f"workgroup_size = [{lanes * subgroups}, 1, 1] subgroup_size = {lanes}" in source
    assert f'#iree_codegen.pass_pipeline<"{row_block_pipeline.PIPELINE}">' in source
    for role in ("fill", "row", "zero", "partials"):
        assert f'lnbwd_role = "{role}"' in source and f'lnbwd_role = "{role}"' in library
    assert source.count('lnbwd_role = "row"') == 2  # the row sum of g * x_hat and dX
    vector = spec.vector
    assert f"thread = [0, 1, {vector}, 0]" in library and f"thread = [0, 1, {vector}]" in library
    assert f"thread = [0, 0, {vector}]" in library and "thread = [0, 2," not in library
    # One final sum, carrying the scheduled partial sum of LayerNorm's design.
    assert source.count("%dgamma_acc = linalg.generic") == 1
    assert schedules.partial_sum_config(spec, lanes, blocks) in source
    # The recompute entry keeps its statistics in a dispatch of their own.
    assert "util.optimization_barrier %rstd_fused" in source


@pytest.mark.parametrize(
    "dtype, shape, target",
    [("f32", (4096, 16384), CUDA), ("bf16", (65536, 768), GFX942), ("f32", (96, 1000), CUDA),
     ("f32", (8192, 4096), CPU), ("f32", (None, None), CUDA)],
    ids=str,
)
def test_rmsnorm_two_passes_where_layernorm_keeps_them(dtype, shape, target):
    spec = Specialization(RMSNORM_BACKWARD, dtype, *shape)
    assert schedules.row_blocks(spec, target) is None
    source = spec.source(target)
    assert "flow.dispatch.region" not in source and "pass_pipeline" not in source
    assert spec.transform_library(target) == ""
    assert "%row_sum_g_xhat = linalg.generic" in source
    # dgamma from blocked partials of one sum for static M, iterated (g, j, r):
    # a unit k dim would be folded away by IREE, with the schedule.
    blocked = schedules.column_blocks(spec, target) is not None
    assert ("%dgamma_parts = linalg.generic" in source) == blocked
    assert ("affine_map<(g, j, r) -> (g, j)>" in source) == blocked
    if blocked and target.backend == "llvm-cpu":
        assert "distribution = [32, 1024, 0], vector_common_parallel = [1, 64, 0], vector_reduction = [0, 0, 1]" in source
    if blocked and target.is_gpu:
        config = schedules.partial_config(spec, target, schedules.column_blocks(spec, target)[1], 1)
        # IREE's choice ("") where no 32-128 threads split N into 16-byte steps: 768 bf16 on wave64, 1000.
        assert (config == "") == (spec.n in (768, 1000))
        assert config in source
        # A 16-byte vector of columns per thread where N splits into whole steps (not 768 bf16 on wave64, 1000).
        assert (f"thread = [0, {spec.vector}, 0]" in config) == (spec.n % (target.subgroup_size * spec.vector) == 0)


PARSE_SHAPES = [(None, None), (8192, 4096), (32768, 1024), (16384, 8192), (4096, 16384), (65536, 768),
                (1024, 512), (4096, 1024), (7, 33)]


@pytest.mark.parametrize("target", [*TARGET_MATRIX, Target("vulkan-spirv", "generic", ("vulkan",))], ids=lambda t: t.name)
def test_every_rendered_source_and_library_parses(target, iree_compiler):
    """Each kernel's rendered source and transform library parse and verify
    as MLIR (IREE's dialects), for every dtype the target takes, without compiling."""
    from iree.compiler import ir

    context = ir.Context()
    for kernel in KERNELS:
        for dtype in ("f32", "f16", "bf16", "f64"):
            try:
                target.check_dtype(dtype)
            except TypeError:
                continue
            for shape in PARSE_SHAPES:
                spec = Specialization(kernel, dtype, *shape)
                for text in (spec.source(target), spec.transform_library(target)):
                    if text:
                        try:
                            ir.Module.parse(text, context)
                        except ir.MLIRError as e:
                            pytest.fail(f"{spec.stem} for {target.name}: {e}")


def test_render_refuses_a_field_no_included_template_reads():
    """A design rule whose field reaches no template is an error naming the
    field and the template, not a silent no-op."""
    from lnbwd_iree.template import render

    spec = Specialization(LAYERNORM_FORWARD, "f32", None, 4096)
    fields = {**spec.fields(), **layernorm.forward_design(spec, CUDA)}
    assert render("layernorm_forward.mlir", fields) == spec.source(CUDA)
    with pytest.raises(ValueError, match=r"template layernorm_forward\.mlir reads no field PARTIAL_CONFIG .*row_statistics\.mlir"):
        render("layernorm_forward.mlir", {**fields, "PARTIAL_CONFIG": ""})
    with pytest.raises(KeyError, match=r"row_statistics\.mlir uses field \{STATS_SUM_CONFIG\}"):
        render("layernorm_forward.mlir", {k: v for k, v in fields.items() if k != "STATS_SUM_CONFIG"})


def test_one_pass_designs_are_records_of_their_walk():
    """The shared row-block schedule takes each op's walk as a record:
    LayerNorm's P rows per step, RMSNorm's one row per step."""
    from lnbwd_iree.ops import rmsnorm

    spec = Specialization(LAYERNORM_BACKWARD, "bf16", 8192, 4096)
    one_pass = layernorm.step_blocks(spec, CUDA)
    assert one_pass.walk == schedules.RowsPerStep(4) and one_pass.grid == schedules.RowBlocks(128, 64, 16)
    assert layernorm.backward_fields(spec, CUDA, one_pass) == layernorm.backward_design(spec, CUDA)
    two_passes = layernorm.backward_fields(spec, CUDA, None)
    assert two_passes["GRADIENT_PASSES"] == "row_then_column_passes.mlir"
    assert layernorm.backward_library_for(spec, CUDA, None) == ""
    assert rmsnorm.ONE_PASS_WALK == schedules.OneRowPerStep()
    schedule = schedules.row_block_schedule(spec, CUDA, one_pass.grid, 1, rmsnorm.ONE_PASS_WALK)
    assert "P" not in schedule.template and schedule.library["ROW_BLOCK_TERMS"] == ""


def test_chip_and_driver_tables_are_checked_against_each_other(monkeypatch):
    """The tables' keys must agree: a driver running an unknown backend, or a
    shipped chip without known figures, is refused (RuntimeError), not assumed."""
    from lnbwd_iree import targets

    targets.check_tables()
    monkeypatch.setitem(targets.DRIVERS, "metal", targets.Driver("metal", ("metal-spirv",), "apple9"))
    with pytest.raises(RuntimeError, match="chip 'apple9' is no metal-spirv GPU chip known here"):
        targets.check_tables()
    monkeypatch.delitem(targets.DRIVERS, "metal")
    cdna = targets.CHIP_FAMILIES[1]
    monkeypatch.delitem(cdna.compute_units, "gfx90a")
    with pytest.raises(RuntimeError, match="shipped or default chip 'gfx90a' \\(rocm\\) has no known compute units"):
        targets.check_tables()


def test_chip_families_give_subgroups_and_figures():
    assert (GFX942.subgroup_size, GFX942.compute_units) == (64, 304)
    assert (GFX1100.subgroup_size, GFX1100.compute_units) == (32, 48)
    assert Target("rocm", "gfx1201", ("hip",)).compute_units is None
    with pytest.raises(ValueError, match="chip 'sm_80' is no rocm GPU chip known here \\(known: gfx9\\*, gfx1\\*\\)"):
        Target("rocm", "sm_80", ("hip",)).subgroup_size
    with pytest.raises(ValueError, match=r"rocm artifacts do not run on \['cuda'\]: they run on \['hip'\]"):
        Target("rocm", "gfx942", ("cuda",))
