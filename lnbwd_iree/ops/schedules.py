"""Schedule rules every op's templates share: how a row dispatch spreads a
row over subgroups, how column sums are blocked, and the one-pass row-block
dispatch (a block's rows walked in a loop, its column partials held in
registers). Each returns template fields or the numbers behind them; an op
module (``ops/<op>.py``) picks among them and names its own templates.
The measurements behind the rules are in docs/performance.md ("Numbers
behind the design rules")."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from .. import row_block_pipeline
from ..dtypes import ITEMSIZE
from ..specialization import Specialization, compilation_info
from ..targets import Target
from ..template import render

# Elements of a row a one-row dispatch holds in registers at once: 64 KiB of
# f32 per workgroup, 16 per thread at 1024 threads. Whole bf16 rows of 65536
# (64 per thread) spilled on gfx942.
ROW_IN_REGISTERS = 16384


# Rows longer than this have their statistics' row sums taken in two levels
# on CPU-like backends (row_sum_blocked.mlir): there a plain row reduction is
# one f32 chain of N terms, 3e-5 off at N = 2^18 and 2e-4 at 2^20. Only
# artifacts of a static N take it: at N = 16384 it cost the forward 18% and
# on the dynamic-N artifact 50% at N = 4096 (docs/performance.md, "Long rows
# in f32"). GPU schedules split a row over a workgroup's threads already.
BLOCKED_ROW_SUMS_ABOVE = 16384


def blocked_row_sums(spec: Specialization, target: Target) -> bool:
    """Whether the row statistics sum in two levels."""
    return not target.is_gpu and spec.n is not None and spec.n > BLOCKED_ROW_SUMS_ABOVE


@dataclass(frozen=True)
class RowConfigs:
    """The schedule of a row dispatch, as template field values: its row
    reductions that feed the root, the root (which carries the dispatch's
    compilation_info) and its elementwise ops."""

    reduction: str
    root: str
    elementwise: str


def row_configs(spec: Specialization, target: Target, subgroups: int, step: int, rows: int = 1) -> RowConfigs:
    """``rows`` rows per workgroup, each spread over ``subgroups`` subgroups,
    a 16-byte vector per thread, ``step`` columns per loop step (N: the
    whole row at once, held in registers)."""
    lanes = target.subgroup_size
    basis = (
        f"lane_basis = [[1, {lanes}], [0, 1]], subgroup_basis = [[{rows}, {subgroups}], [0, 1]], "
        f"thread = [{1 if rows > 1 else 0}, {spec.vector}]"
    )
    root = f"{basis}, partial_reduction = [0, {step}], workgroup = [{rows}, 0]"
    return RowConfigs(
        reduction=f", lowering_config = #iree_gpu.lowering_config<{{{basis}, partial_reduction = [0, {step}]}}>",
        root=compilation_info(root, lanes * subgroups * rows, lanes, "VectorDistribute"),
        elementwise=f", lowering_config = #iree_gpu.lowering_config<{{{basis}, serial = [0, {step}]}}>",
    )


def forward_schedule(spec: Specialization, target: Target) -> tuple[int, int, int] | None:
    """(subgroups, step, rows) of a forward's one row dispatch (row_configs)
    on GPU targets with static N, or None to leave it to IREE.

    IREE's default gives each row one subgroup and walks it once per
    statistic and once for Y, reading X from memory each time. Here a row
    is spread over enough subgroups that each thread holds four 16-byte
    vectors of it (at most 1024 threads); with step = N the walks become
    one and X is read once. Rows beyond ROW_IN_REGISTERS elements are walked
    in steps of at most that many columns, re-reading the row from cache."""
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
    if spec.n <= ROW_IN_REGISTERS:
        return subgroups, spec.n, 1
    step = next(k * batch for k in range(ROW_IN_REGISTERS // batch, 0, -1) if spec.n % (k * batch) == 0)
    return subgroups, step, 1


def backward_row_configs(spec: Specialization, target: Target) -> RowConfigs | None:
    """The schedule of a two-pass backward's row dispatch (its row sums and
    dX) on GPU targets with static N, or None to leave it to IREE.

    IREE's default gives each row one subgroup; with many rows in flight per
    SM their dY and X rows overflow L1 and L2 before the later walks over a
    row re-read them. One thread per 128 bytes of a row's dY and X keeps the
    rows in flight (up to 2048 threads per SM/CU) near what L1 holds, so
    those re-reads hit L1."""
    if not target.is_gpu or spec.n is None:
        return None
    vector = spec.vector
    lanes = target.subgroup_size
    row_bytes = 2 * spec.n * ITEMSIZE[spec.dtype]
    wanted = min(1024, max(64, row_bytes // 128)) // lanes
    subgroups = next(
        (s for s in (32, 16, 8, 4, 2, 1) if s <= max(wanted, 1) and spec.n % (lanes * s * vector) == 0), None
    )
    if subgroups is None:
        return None
    return row_configs(spec, target, subgroups, lanes * subgroups * vector)


def column_blocks(spec: Specialization, target: Target) -> tuple[int, int] | None:
    """(G, R): a two-pass backward's column sums run over G blocks of R rows
    (M = G * R) when M is static; None for one reduction over all M rows."""
    if spec.m is None:
        return None
    if not target.is_gpu:
        # CPUs walk each block's rows in order; R from 16 to 64 measured
        # alike, and a larger R shrinks the final sum.
        rows = next((r for r in (64, 32, 16, 8, 4, 2) if spec.m % r == 0), None)
        return (spec.m // rows, rows) if rows else None
    # GPUs: the partials take ~R serial steps per thread and the final sum
    # ~G, so G ~ sqrt(M) balances the two for small problems; large ones
    # are bandwidth-bound and need G * N / 16-byte threads >= 2^17 to keep
    # enough loads in flight.
    blocks = 1 << math.ceil(math.log2(math.sqrt(spec.m)))
    if spec.is_large():
        blocks = max(blocks, 1 << math.ceil(math.log2(2**17 * spec.vector / (spec.n or 1))))
    blocks = min(blocks, spec.m // 2)
    while blocks > 1 and spec.m % blocks:
        blocks //= 2
    return (blocks, spec.m // blocks) if blocks > 1 else None


def partial_config(spec: Specialization, target: Target, rows: int, sums: int) -> str:
    """compilation_info for the blocked partial column sums of R = ``rows``
    rows per block on GPU and llvm-cpu targets, or "" to leave the choice to
    IREE (vmvx). The op iterates (g, k, j, r) over ``sums`` column sums,
    or (g, j, r) for one sum: IREE folds a unit k dim away, and a hand-set
    schedule with it, so a one-sum op is written without that dim."""
    k = [] if sums == 1 else [sums]
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
    step, so rows are read contiguously (IREE's default vectorised along r,
    transposing each strided [j, r] tile)."""
    return (
        ", compilation_info = #iree_codegen.compilation_info<"
        f"lowering_config = #iree_cpu.lowering_config<distribution = {[32, *k, 1024, 0]}, "
        f"vector_common_parallel = {[1, *k, 64, 0]}, vector_reduction = {[0, *[0] * len(k), 0, 1]}>, "
        "translation_info = #iree_codegen.translation_info<pipeline = #iree_cpu.pipeline<DoubleTilingExpert>>>"
    )


def partial_sum_config(spec: Specialization, lanes: int, blocks: int) -> str:
    """Schedule for a final sum of [G, N] partials, iterated (c, g): up to 8
    subgroups split the G rows, each thread reading one 16-byte vector of
    columns per row; "" (IREE's choice) when G or N does not split evenly."""
    vector = 16 // ITEMSIZE[spec.accumulator]
    subgroups = next((s for s in (8, 4, 2, 1) if blocks % (lanes * s) == 0), None)
    if subgroups is None or spec.n is None or spec.n % vector:
        return ""
    tiles = (
        f"lane_basis = [[1, {lanes}], [0, 1]], subgroup_basis = [[1, {subgroups}], [0, 1]], thread = [{vector}, 1], "
        f"partial_reduction = [0, {lanes * subgroups}], workgroup = [{vector}, 0]"
    )
    return compilation_info(tiles, lanes * subgroups, lanes, "VectorDistribute")


class RowBlocks(NamedTuple):
    """A one-pass backward's grid: G = ``blocks`` workgroups of ``subgroups``
    subgroups, each walking R = ``rows`` rows."""

    blocks: int
    rows: int
    subgroups: int


def row_blocks(spec: Specialization, target: Target) -> RowBlocks | None:
    """The grid of a one-pass backward over dY and X, one row per loop step,
    or None for the two-pass design.

    Each lane holds 16 elements of a row (four 16-byte f32 vectors, two of
    16-bit data) and its columns' fp32 partial sums across the row loop.
    Rows beyond 512 lanes x 16 elements keep two passes: a 1024-thread
    workgroup has too few registers per thread for the row and its
    partials. Blocks of at least 32 rows, at most ~8 workgroups per SM/CU
    (Target.compute_units) and at most 2^21 / N blocks (16 MiB of fp32
    partials), 2^20 / N for 16-bit data, whose rows carry half the bytes:
    more blocks cost more partials to write and sum."""
    # GPU schedules are written for f32 and 16-bit data (f64 is for CPU
    # gradchecks). The pass pipeline is LLVMGPU's (CUDA, ROCm), and the grid
    # needs the chip's SM/CU count.
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
    return RowBlocks(spec.m // rows, rows, subgroups)


@dataclass(frozen=True)
class OneRowPerStep:
    """A one-pass template whose block rows are [G, R, N], one row per loop
    step: its row ops iterate (g, r, j), its partial sums (g, k, j, r)."""

    def tiles(self, basis, sums: int, vector: int, rows: int) -> tuple[str, str, dict, dict]:
        """(row ops' tiles, partial sums' tiles, template fields, library fields) of this walk."""
        partial = f"{basis([0, sums, vector, 0], 2)}, serial = [0, 0, 0, 1], workgroup = [1, 0, 0, 0]"
        return basis([0, 0, vector], 2), partial, {}, {"ROW_BLOCK_TERMS": ""}


@dataclass(frozen=True)
class RowsPerStep:
    """A one-pass template whose block rows are [G, R / P, P, N], P =
    ``rows_per_step`` rows per loop step: its row ops iterate (g, r, p, j);
    a separate op of per-row terms and the partial sums share the
    (g, k, j, r, p) tiles."""

    rows_per_step: int

    def tiles(self, basis, sums: int, vector: int, rows: int) -> tuple[str, str, dict, dict]:
        """(row ops' tiles, partial sums' tiles, template fields, library fields) of this walk."""
        shared = basis([0, sums, vector, 0, 0], 2)
        partial = f"{shared}, serial = [0, 0, 0, 1, 0], workgroup = [1, 0, 0, 0, 0]"
        template = {"P": str(self.rows_per_step), "STEPS": str(rows // self.rows_per_step)}
        library = {
            "ROW_BLOCK_TERMS": "row_block_terms_config.mlir",
            "ROW_BLOCK_TERMS_CONFIG": f"#iree_gpu.lowering_config<{{{shared}}}>",
        }
        return basis([0, 0, 0, vector], 3), partial, template, library


@dataclass(frozen=True)
class RowBlockSchedule:
    """A one-pass dispatch's schedule: the fields its template reads, and
    those of its transform library (row_block_configs.mlir), which gives each
    op of the dispatch its own lowering config back (found by its
    ``lnbwd_role`` attribute)."""

    template: dict[str, str]
    library: dict[str, str]

    def library_source(self) -> str:
        return render("row_block_configs.mlir", self.library)


def row_block_schedule(
    spec: Specialization, target: Target, grid: RowBlocks, sums: int, walk: OneRowPerStep | RowsPerStep
) -> RowBlockSchedule:
    """Each row spread over the workgroup's lanes, then its subgroups, a
    16-byte vector per thread and step; ``sums`` column sums per block
    ([G, sums, N] partials), each thread holding all of them for its
    columns; the rows walked as ``walk`` says."""
    lanes = target.subgroup_size
    vector = spec.vector

    def basis(thread: list[int], column: int) -> str:
        def counts(n: int) -> str:
            values = [1] * len(thread)
            values[column] = n
            return f"[{values}, {list(range(len(thread)))}]"

        return f"lane_basis = {counts(lanes)}, subgroup_basis = {counts(grid.subgroups)}, thread = {thread}"

    # The column j is dim 2 of (g, k, j, ...) and the last dim of the row ops.
    row, partial, template, library = walk.tiles(basis, sums, vector, grid.rows)
    # The textual pipeline of row_block_pipeline.py keeps the partials in
    # registers; IREE copies this op's config to every op of the dispatch,
    # and its lowering_strategy (row_block_configs.mlir) gives each op its own.
    strategy = f'{partial}, lowering_strategy = "lnbwd_row_block_configs"'
    pipeline = f'#iree_codegen.pass_pipeline<"{row_block_pipeline.PIPELINE}">'
    return RowBlockSchedule(
        template={
            "G": str(grid.blocks),
            "R": str(grid.rows),
            **template,
            "ROW_BLOCK_PARTIAL_CONFIG": compilation_info(strategy, lanes * grid.subgroups, lanes, pipeline),
            "PARTIAL_SUM_CONFIG": partial_sum_config(spec, lanes, grid.blocks),
        },
        library={
            **library,
            "ROW_BLOCK_ROW_CONFIG": f"#iree_gpu.lowering_config<{{{row}}}>",
            "ROW_BLOCK_ZERO_CONFIG": f"#iree_gpu.lowering_config<{{{basis([0, sums, vector], 2)}}}>",
            "ROW_BLOCK_PARTIAL_TILES": f"#iree_gpu.lowering_config<{{{partial}}}>",
        },
    )
