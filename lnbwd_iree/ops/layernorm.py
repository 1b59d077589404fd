"""LayerNorm over the last dim: its kernels, their entry points and argument
roles, and the design rules that fill its templates (mlir/layernorm_*.mlir).

The forward is one row dispatch (statistics and Y). The backward runs two
passes over dY and X (row reductions with dX, then blocked column sums), or,
for static shapes on CUDA/ROCm chips with known figures, one pass over row
blocks with register-held column partials (row_block_pass.mlir)."""

from __future__ import annotations

import math

from .. import row_block_pipeline
from ..dtypes import ITEMSIZE
from ..specialization import Arg, Entry, Kernel, Role, Specialization, compilation_info
from ..targets import Target
from ..template import render

# Elements of a row the forward holds in registers at once: 64 KiB of f32 per
# workgroup, 16 per thread at 1024 threads. bf16 rows of 65536 held whole
# (64 per thread) spilled 121 VGPRs on gfx942.
FORWARD_ROW_IN_REGISTERS = 16384


def column_blocks(spec: Specialization, target: Target) -> tuple[int, int] | None:
    """(G, R): the column sums run over G blocks of R rows (M = G * R) when
    M is static; None for a single reduction over all M rows."""
    if spec.m is None:
        return None
    if not target.is_gpu:
        # CPUs walk each block's rows in order; with the partials schedule
        # of partial_config, R from 16 to 64 measured alike on a 2-core x86
        # (36 ms at 8192x4096 f32), and larger R shrinks the final sum.
        rows = next((r for r in (64, 32, 16, 8, 4, 2) if spec.m % r == 0), None)
        return (spec.m // rows, rows) if rows else None
    # GPUs: the partials take ~R serial steps per thread and the final sum
    # ~G, so G ~ sqrt(M) balances the two for small problems; large ones
    # (dY + X over 64 MiB) are bandwidth-bound and need G * N / 16-byte
    # threads >= 2^17 to keep enough loads in flight.
    blocks = 1 << math.ceil(math.log2(math.sqrt(spec.m)))
    if spec.is_large():
        blocks = max(blocks, 1 << math.ceil(math.log2(2**17 * spec.vector / (spec.n or 1))))
    blocks = min(blocks, spec.m // 2)
    while blocks > 1 and spec.m % blocks:
        blocks //= 2
    return (blocks, spec.m // blocks) if blocks > 1 else None

def partial_layout(spec: Specialization, target: Target, blocks: int) -> dict[str, str]:
    """Layout of the [G, 2, N] partial column sums (column_sums_blocked.mlir).
    On the H100, G innermost ([2, N, G]) cut the final sum from 52 to 5 us
    at 65536x768 (G = 1024) and small shapes by ~20 us, but its strided
    writes cost 15-40 us on large shapes with G <= 256, where the final sum
    over [G, 2, N] took ~8 us."""
    if target.is_gpu and (blocks >= 512 or not spec.is_large()):
        return {"PARTIALS": f"2x?x{blocks}x{spec.accumulator}", "PARTIAL_INDEX": "(k, j, g)"}
    return {"PARTIALS": f"{blocks}x2x?x{spec.accumulator}", "PARTIAL_INDEX": "(g, k, j)"}

def partial_config(spec: Specialization, target: Target, rows: int, sums: int | None) -> str:
    """compilation_info for the blocked partial column sums on GPU and
    llvm-cpu targets (see column_sums_blocked.mlir), or "" to leave the
    choice to IREE (vmvx). ``sums``: the size of the op's k dim, iterated
    (g, k, j, r), the column sums it makes (LayerNorm's dbeta and dgamma);
    None for an op of one sum without that dim, iterated (g, j, r) (RMSNorm's
    dgamma: IREE folds a unit k dim away, and the schedule with it)."""
    k = [] if sums is None else [sums]
    if target.backend == "llvm-cpu":
        return cpu_partial_config(k)
    if not target.is_gpu or spec.n is None:
        return ""
    vector = spec.vector
    subgroup = target.subgroup_size
    threads = next((t for t in (128, 64, 32) if t >= subgroup and spec.n % (t * vector) == 0), None)
    if threads is None:
        return ""
    return compilation_info(
        f"workgroup = {[1, *k, threads * vector, 0]}, thread = {[0, *k, vector, 0]}, "
        f"reduction = {[0, *[0] * len(k), 0, min(8, rows)]}",
        threads,
        subgroup,
    )

def cpu_partial_config(k: list[int]) -> str:
    """llvm-cpu schedule for the partials (iterated (g, k, j, r), or (g, j, r)
    where ``k`` is empty): vectors of 64 columns for every k, one row r per
    step. IREE's default vectorised along r, transposing each strided [j, r]
    tile (8192x4096 f32: partials ~45 ms, total 75 ms); this one reads rows
    contiguously (12 ms, total 36 ms)."""
    return (
        ", compilation_info = #iree_codegen.compilation_info<"
        f"lowering_config = #iree_cpu.lowering_config<distribution = {[32, *k, 1024, 0]}, "
        f"vector_common_parallel = {[1, *k, 64, 0]}, vector_reduction = {[0, *[0] * len(k), 0, 1]}>, "
        "translation_info = #iree_codegen.translation_info<pipeline = #iree_cpu.pipeline<DoubleTilingExpert>>>"
    )

def row_configs(spec: Specialization, target: Target) -> dict[str, str]:
    """Schedules for the dispatch that holds both row reductions and dX on
    GPU targets with static N. IREE's default gives each row one subgroup;
    with up to 32 rows in flight per SM their dY and X rows (2 * N *
    itemsize bytes each) overflow L1 and L2 before the second and third
    pass over the row re-read them. Several subgroups per row keep fewer
    rows in flight, so the re-reads hit cache."""
    empty = {"ROW_SUM_CONFIG": "", "ROW_ROOT_CONFIG": "", "ROW_DX_CONFIG": ""}
    if not target.is_gpu or spec.n is None:
        return empty
    vector = spec.vector
    lanes = target.subgroup_size
    # One thread per 128 bytes of a row's dY and X: with up to 2048 threads
    # per SM/CU, the rows in flight then total about 256 KiB, what its L1
    # holds, so the second and third pass over a row hit L1.
    row_bytes = 2 * spec.n * ITEMSIZE[spec.dtype]
    wanted = min(1024, max(64, row_bytes // 128)) // lanes
    subgroups = next(
        (s for s in (32, 16, 8, 4, 2, 1) if s <= max(wanted, 1) and spec.n % (lanes * s * vector) == 0), None
    )
    if subgroups is None:
        return empty
    step = lanes * subgroups * vector
    basis = f"lane_basis = [[1, {lanes}], [0, 1]], subgroup_basis = [[1, {subgroups}], [0, 1]], thread = [0, {vector}]"
    reduction = f"#iree_gpu.lowering_config<{{{basis}, partial_reduction = [0, {step}]}}>"
    root = f"{basis}, partial_reduction = [0, {step}], workgroup = [1, 0]"
    elementwise = f"#iree_gpu.lowering_config<{{{basis}, serial = [0, {step}]}}>"
    return {
        "ROW_SUM_CONFIG": f", lowering_config = {reduction}",
        "ROW_ROOT_CONFIG": compilation_info(root, lanes * subgroups, lanes, "VectorDistribute"),
        "ROW_DX_CONFIG": f", lowering_config = {elementwise}",
    }

def forward_schedule(spec: Specialization, target: Target) -> tuple[int, int, int] | None:
    """(subgroups, step, rows) of the forward's dispatch (forward_configs)
    on GPU targets with static N, or None to leave it to IREE.

    IREE's default gives each row one subgroup and walks it three times
    (shifted sum, centred sum of squares, Y), reading X from memory each
    time: 45-50% of copy on rows of 16 KiB or more (H100). Here a row is
    spread over enough subgroups that each thread holds four 16-byte
    vectors of it (at most 1024 threads); with step = N the three walks
    become one, X stays in registers and is read once (87-97% of copy).
    Rows beyond FORWARD_ROW_IN_REGISTERS elements are walked in steps of
    at most that many columns instead, re-reading the row from cache."""
    if not target.is_gpu or spec.n is None:
        return None
    lanes = target.subgroup_size
    per_subgroup = lanes * spec.vector
    if spec.n % per_subgroup:
        return None
    subgroups = max(1, min(1024 // lanes, spec.n // (4 * per_subgroup)))
    while spec.n % (subgroups * per_subgroup):
        subgroups -= 1
    batch = subgroups * per_subgroup
    if spec.n <= FORWARD_ROW_IN_REGISTERS:
        return subgroups, spec.n, 1
    step = next(k * batch for k in range(FORWARD_ROW_IN_REGISTERS // batch, 0, -1) if spec.n % (k * batch) == 0)
    return subgroups, step, 1

def forward_configs(spec: Specialization, target: Target, subgroups: int, step: int, rows: int = 1) -> dict[str, str]:
    """Template fields of the forward's one dispatch (the two row
    statistics and Y): ``rows`` rows per workgroup, each spread over
    ``subgroups`` subgroups, a 16-byte vector per thread, ``step``
    columns per loop step (N: the whole row at once, held in registers)."""
    lanes = target.subgroup_size
    basis = (
        f"lane_basis = [[1, {lanes}], [0, 1]], subgroup_basis = [[{rows}, {subgroups}], [0, 1]], "
        f"thread = [{1 if rows > 1 else 0}, {spec.vector}]"
    )
    root = f"{basis}, partial_reduction = [0, {step}], workgroup = [{rows}, 0]"
    return {
        "STATS_SUM_CONFIG": f", lowering_config = #iree_gpu.lowering_config<{{{basis}, partial_reduction = [0, {step}]}}>",
        "STATS_ROOT_CONFIG": compilation_info(root, lanes * subgroups * rows, lanes, "VectorDistribute"),
        "FORWARD_Y_CONFIG": f", lowering_config = #iree_gpu.lowering_config<{{{basis}, serial = [0, {step}]}}>",
    }

def row_blocks(spec: Specialization, target: Target) -> tuple[int, int, int] | None:
    """(G, R, S) when the backward runs as one pass over dY and X, one row
    per loop step (RMSNorm's rmsnorm_row_block_pass.mlir; LayerNorm's
    step_blocks starts from it): G workgroups of S subgroups, each walking
    R rows; None for the two-pass design.

    Each lane holds 16 elements of a row (four 16-byte f32 vectors, two
    of 16-bit data) and its columns' fp32 partial sums (32 registers)
    across the row loop. Rows beyond 512 lanes x 16 elements (8192 on
    CUDA) keep two passes: a 1024-thread workgroup may use 64 registers
    per thread, too few for the row and its partials (H100, 4096x16384:
    one pass 833 us, two passes 479 us in f32; 310 vs 291 us in bf16).
    Blocks of at least 32 rows, at most ~8 workgroups per SM/CU
    (Target.compute_units) and at most 2^21 / N blocks (16 MiB of fp32
    partials), 2^20 / N for 16-bit data, whose rows carry half the bytes:
    more blocks cost more partials to write and sum (docs/performance.md,
    changes 29-30 and 33)."""
    # f64 exists for CPU gradchecks; GPU schedules are written for f32 and
    # 16-bit data. The pass pipeline is LLVMGPU's (CUDA, ROCm), and the
    # grid needs the chip's SM/CU count.
    if spec.m is None or spec.n is None or spec.dtype == "f64" or target.backend not in ("cuda", "rocm"):
        return None
    if target.compute_units is None:
        return None
    lanes = target.subgroup_size
    wanted = max(1, spec.n // (lanes * 16))
    subgroups = next((s for s in range(wanted, 0, -1) if spec.n % (lanes * s * spec.vector) == 0), None)
    if subgroups is None or lanes * subgroups > 512 or spec.n > lanes * subgroups * 32:
        return None
    partial_budget = 2**20 if ITEMSIZE[spec.dtype] == 2 else 2**21
    max_blocks = min(1 << int(math.log2(8 * target.compute_units)), partial_budget // spec.n)
    rows = max(32, spec.m // max_blocks)
    # Halved while fewer than 2^15 threads would run (small shapes): a
    # block walks its rows one at a time.
    while rows > 2 and (spec.m % rows or spec.m // rows * lanes * subgroups < 2**15):
        rows //= 2
    if spec.m % rows:
        return None
    return spec.m // rows, rows, subgroups

def step_blocks(spec: Specialization, target: Target) -> tuple[int, int, int, int] | None:
    """(G, R, S, P) of LayerNorm's one pass (row_block_pass.mlir): row_blocks'
    G workgroups of S subgroups walking R rows, P rows per loop step; None
    for two passes.

    The block's fp32 partials and gamma take about 3 registers per column
    of a lane, a row's dY and X 2 more per row in the step: one row per
    step leaves an SM one or two 16-bit rows of N >= 4096 in flight at
    ~115 registers, 2-4 rows per step share the partials (16-bit only:
    f32 rows already carry twice the bytes, 90-95% of copy). Rows of up to
    512 lanes x one 16-byte vector take 4 rows per step, ~127 registers
    (sm_90; gfx942 162 VGPRs), so 512 / threads workgroups per SM/CU, and
    the grid is that many per SM/CU, rounded down to a power of two, with
    blocks of >= 32 rows (large M only); longer rows (two vectors a lane)
    take 2 rows per step on row_blocks' grid. Measured on the H100 (bf16,
    docs/performance.md change 40): 8192x4096 99.4 -> 91.2 us,
    16384x8192 366 -> 339, 32768x1024 88.5 -> 85.8, 65536x768 139.4 -> 133.6."""
    base = row_blocks(spec, target)
    if base is None or ITEMSIZE[spec.dtype] != 2:
        return None if base is None else (*base, 1)
    lanes = target.subgroup_size
    per_subgroup = lanes * spec.vector
    subgroups = spec.n // per_subgroup
    if spec.n % per_subgroup == 0 and lanes * subgroups <= 512:
        per_unit = max(1, 512 // (lanes * subgroups))
        grid = 1 << int(math.log2(target.compute_units * per_unit))
        if spec.m % (grid * 32) == 0:
            return grid, spec.m // grid, subgroups, 4
        return (*base, 1)
    blocks, rows, subgroups = base
    return (blocks, rows, subgroups, 2) if rows % 2 == 0 else (*base, 1)


def row_block_configs(
    spec: Specialization, target: Target, blocks: int, rows: int, subgroups: int, sums: int,
    rows_per_step: int | None = None,
) -> dict[str, str]:
    """The schedule fields of a one-pass row-block dispatch and its
    transform library (row_block_configs.mlir): each row spread over the
    workgroup's lanes, then its subgroups, a 16-byte vector per thread and
    step; ``sums`` column sums per block ([G, sums, N] partials: LayerNorm's
    dbeta and dgamma, RMSNorm's dgamma), each thread holding all of them
    for its columns. ``rows_per_step``: LayerNorm's design
    (row_block_pass.mlir: rows as [G, R / P, P, N], row ops over
    (g, r, p, j), the per-row terms and their partial sums over
    (g, k, j, r, p)); None: RMSNorm's, one row per step (row ops over
    (g, r, j), partial sums over (g, k, j, r))."""
    lanes = target.subgroup_size
    vector = spec.vector

    def basis(thread: list[int], column: int) -> str:
        def counts(n: int) -> str:
            values = [1] * len(thread)
            values[column] = n
            return f"[{values}, {list(range(len(thread)))}]"

        return f"lane_basis = {counts(lanes)}, subgroup_basis = {counts(subgroups)}, thread = {thread}"

    # The column j is dim 2 of (g, k, j, ...) and the last dim of the row ops.
    if rows_per_step is None:
        row = basis([0, 0, vector], 2)
        partial = f"{basis([0, sums, vector, 0], 2)}, serial = [0, 0, 0, 1], workgroup = [1, 0, 0, 0]"
        by_design = {"ROW_BLOCK_TERMS": ""}
    else:
        row = basis([0, 0, 0, vector], 3)
        # The terms and their partial sums share the (g, k, j, r, p) tiles.
        tiles = basis([0, sums, vector, 0, 0], 2)
        partial = f"{tiles}, serial = [0, 0, 0, 1, 0], workgroup = [1, 0, 0, 0, 0]"
        by_design = {
            "P": str(rows_per_step),
            "STEPS": str(rows // rows_per_step),
            "ROW_BLOCK_TERMS": "row_block_terms_config.mlir",
            "ROW_BLOCK_TERMS_CONFIG": f"#iree_gpu.lowering_config<{{{tiles}}}>",
        }
    # The textual pipeline of row_block_pipeline.py keeps the partials in
    # registers; IREE copies this op's config to every op of the dispatch,
    # and its lowering_strategy (row_block_configs.mlir) gives each op its own.
    strategy = f'{partial}, lowering_strategy = "lnbwd_row_block_configs"'
    pipeline = f'#iree_codegen.pass_pipeline<"{row_block_pipeline.PIPELINE}">'
    return {
        "G": str(blocks),
        "R": str(rows),
        **by_design,
        "ROW_BLOCK_ROW_CONFIG": f"#iree_gpu.lowering_config<{{{row}}}>",
        "ROW_BLOCK_ZERO_CONFIG": f"#iree_gpu.lowering_config<{{{basis([0, sums, vector], 2)}}}>",
        "ROW_BLOCK_PARTIAL_TILES": f"#iree_gpu.lowering_config<{{{partial}}}>",
        "ROW_BLOCK_PARTIAL_CONFIG": compilation_info(strategy, lanes * subgroups, lanes, pipeline),
        "PARTIALS": f"{blocks}x{sums}x?x{spec.accumulator}",
        "PARTIAL_SUM_CONFIG": partial_sum_config(spec, lanes, blocks),
    }


def row_block_fields(
    spec: Specialization, target: Target, blocks: int, rows: int, subgroups: int, rows_per_step: int
) -> dict[str, str]:
    """Template fields of row_block_pass.mlir: the row-block schedule with
    two column sums, and LayerNorm's own choices."""
    return {
        **row_block_configs(spec, target, blocks, rows, subgroups, sums=2, rows_per_step=rows_per_step),
        "FINAL_SUMS": "column_sums_two_results.mlir",
        # 16-bit rows of >= 4096 elements (few rows in flight per SM): X
        # and the statistics enter the first row sum so that a step's loads
        # are issued together (row_block_pass.mlir). Elsewhere it measured
        # level or slower and costs registers on gfx942.
        "SUM_G_READS_X": (
            f"%load_x_first = arith.cmpf uno, %mean_s, %rstd_s : {spec.accumulator}"
            if ITEMSIZE[spec.dtype] == 2 and spec.n >= 4096
            else "%load_x_first = arith.constant false"
        ),
    }

def partial_sum_config(spec: Specialization, lanes: int, blocks: int) -> str:
    """Schedule for a final sum of [G, N] partials (each sum of
    column_sums_two_results.mlir, rmsnorm_row_block_pass.mlir's one),
    iterated (c, g): up to 8 subgroups split the G rows, each thread
    reading one 16-byte vector of columns per row; "" (IREE's choice) when
    G or N does not split evenly."""
    vector = 16 // ITEMSIZE[spec.accumulator]
    subgroups = next((s for s in (8, 4, 2, 1) if blocks % (lanes * s) == 0), None)
    if subgroups is None or spec.n is None or spec.n % vector:
        return ""
    tiles = (
        f"lane_basis = [[1, {lanes}], [0, 1]], subgroup_basis = [[1, {subgroups}], [0, 1]], thread = [{vector}, 1], "
        f"partial_reduction = [0, {lanes * subgroups}], workgroup = [{vector}, 0]"
    )
    return compilation_info(tiles, lanes * subgroups, lanes, "VectorDistribute")

def stats_barrier(spec: Specialization, needed: bool) -> str:
    """Defines %mean, %rstd from %mean_fused, %rstd_fused in the recompute
    entry: through an optimization barrier when the row dispatch has a
    hand-set schedule (static shapes only: a barrier on dynamic tensors
    hides their dims from IREE), else as plain aliases."""
    if needed and spec.m is not None:
        stats = f"tensor<{spec.m}x{spec.accumulator}>"
        return f"%mean, %rstd = util.optimization_barrier %mean_fused, %rstd_fused : {stats}, {stats}"
    stats = f"tensor<{'?' if spec.m is None else spec.m}x{spec.accumulator}>"
    return (
        f"%mean = tensor.cast %mean_fused : {stats} to {stats}\n"
        f"  %rstd = tensor.cast %rstd_fused : {stats} to {stats}"
    )



def common_fields() -> dict[str, str]:
    """Fields of the designs that leave a choice to IREE (no hand-set schedule)."""
    return {
        "GRADIENT_PASSES": "row_then_column_passes.mlir",
        "COLUMN_SUMS": "column_sums_direct.mlir",
        "STATS_SUM_CONFIG": "",
        "STATS_ROOT_CONFIG": "",
        "FORWARD_Y_CONFIG": "",
    }


def forward_design(spec: Specialization, target: Target) -> dict[str, str]:
    fields = common_fields()
    schedule = forward_schedule(spec, target)
    if schedule is not None:
        fields.update(forward_configs(spec, target, *schedule))
    return fields


def backward_design(spec: Specialization, target: Target) -> dict[str, str]:
    # dX's and the second row sum's gamma * dY as fma operands for 16-bit
    # data: with several rows per step it is not kept on its own (196 -> 175
    # registers at 2 rows, sm_90), and bf16 4096x16384 (two passes) measured
    # 297 -> 278 us; f32 measured 3-5% slower with it (docs/performance.md,
    # change 40).
    products = "fused" if ITEMSIZE[spec.dtype] == 2 else "separate"
    fields = {
        **common_fields(),
        "GC_TERM": f"gc_term_{products}.mlir",
        "DX_NUMERATOR": f"dx_numerator_{products}.mlir",
    }
    one_pass = step_blocks(spec, target)
    if one_pass is not None:
        fields.update(row_block_fields(spec, target, *one_pass))
        fields.update(GRADIENT_PASSES="row_block_pass.mlir", STATS_BARRIER=stats_barrier(spec, True))
        return fields
    configs = row_configs(spec, target)
    fields.update(configs, STATS_BARRIER=stats_barrier(spec, bool(configs["ROW_ROOT_CONFIG"])))
    fields.update(column_sums_fields(spec, target))
    return fields


def column_sums_fields(spec: Specialization, target: Target) -> dict[str, str]:
    """The two-pass design's column sums of dY and dY * x_hat: one reduction
    over all rows (column_sums_direct.mlir), or for static M blocked partials
    and their final sums (column_sums_blocked.mlir)."""
    blocks = column_blocks(spec, target)
    if blocks is None:
        return {"COLUMN_SUMS": "column_sums_direct.mlir"}
    layout = partial_layout(spec, target, blocks[0])
    # On GPUs, [G, 2, N] partials are summed by a scheduled op over their
    # two [G, N] slices (8192x4096 bf16: IREE's own 3-D op took 15 us in 64
    # workgroups of 32 threads); else by one op over the whole.
    final_config = partial_sum_config(spec, target.subgroup_size, blocks[0]) if target.is_gpu else ""
    sliced = bool(final_config) and layout["PARTIAL_INDEX"] == "(g, k, j)"
    return dict(
        COLUMN_SUMS="column_sums_blocked.mlir",
        G=str(blocks[0]),
        R=str(blocks[1]),
        PARTIAL_CONFIG=partial_config(spec, target, blocks[1], sums=2),
        FINAL_SUMS="column_sums_two_results.mlir" if sliced else "column_sums_joint.mlir",
        PARTIAL_SUM_CONFIG=final_config,
        **layout,
    )


def row_block_library(spec: Specialization, target: Target, sums: int) -> str:
    """RMSNorm's one-pass per-op lowering configs (row_block_configs.mlir)
    for ``sums`` column sums, or "" where row_blocks keeps two passes."""
    one_pass = row_blocks(spec, target)
    if one_pass is None:
        return ""
    return render("row_block_configs.mlir", {**spec.fields(), **row_block_configs(spec, target, *one_pass, sums=sums)})


def backward_library(spec: Specialization, target: Target) -> str:
    """LayerNorm's one-pass per-op lowering configs, or "" for two passes."""
    one_pass = step_blocks(spec, target)
    if one_pass is None:
        return ""
    blocks, rows, subgroups, rows_per_step = one_pass
    configs = row_block_configs(spec, target, blocks, rows, subgroups, sums=2, rows_per_step=rows_per_step)
    return render("row_block_configs.mlir", {**spec.fields(), **configs})


_DY, _X = Arg("dy", Role.ROWS), Arg("x", Role.ROWS)
_GAMMA, _BETA = Arg("gamma", Role.COLUMNS), Arg("beta", Role.COLUMNS)
_MEAN, _RSTD = Arg("mean", Role.ROW_STATS), Arg("rstd", Role.ROW_STATS)
_GRADIENTS = (Arg("dx", Role.ROWS), Arg("dgamma", Role.COLUMNS), Arg("dbeta", Role.COLUMNS))

LAYERNORM_BACKWARD = Kernel(
    "layernorm_backward",
    (
        Entry("layernorm_backward", (_DY, _X, _GAMMA, _MEAN, _RSTD), _GRADIENTS, (), "layernorm_backward"),
        Entry("layernorm_backward_recompute", (_DY, _X, _GAMMA), _GRADIENTS, ("eps",), "layernorm_backward"),
    ),
    backward_design,
    backward_library,
)
LAYERNORM_FORWARD = Kernel(
    "layernorm_forward",
    (Entry("layernorm_forward", (_X, _GAMMA, _BETA), (Arg("y", Role.ROWS), _MEAN, _RSTD), ("eps",)),),
    forward_design,
    per_n=True,
)
KERNELS = (LAYERNORM_BACKWARD, LAYERNORM_FORWARD)
