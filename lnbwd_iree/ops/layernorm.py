"""LayerNorm over the last dim: its kernels, their entry points and argument
roles, and its choices among the shared schedule rules (``ops.schedules``)
that fill its templates (mlir/layernorm_*.mlir).

The forward is one row dispatch (statistics and Y). The backward runs two
passes over dY and X (row reductions with dX, then blocked column sums), or,
for static shapes on CUDA/ROCm chips with known figures, one pass over row
blocks with register-held column partials (row_block_pass.mlir), P rows per
loop step (``step_blocks``)."""

from __future__ import annotations

import math
from typing import NamedTuple

from ..dtypes import ITEMSIZE
from ..specialization import Arg, Entry, Kernel, Role, Specialization
from ..targets import Target
from . import schedules
from .schedules import RowBlocks, RowConfigs, RowsPerStep

# Column sums per block: dbeta and dgamma.
COLUMN_SUMS = 2


class SteppedBlocks(NamedTuple):
    """LayerNorm's one-pass grid: ``schedules.row_blocks``' G workgroups of S
    subgroups walking R rows, P = ``rows_per_step`` rows per loop step."""

    blocks: int
    rows: int
    subgroups: int
    rows_per_step: int

    @property
    def grid(self) -> RowBlocks:
        return RowBlocks(self.blocks, self.rows, self.subgroups)

    @property
    def walk(self) -> RowsPerStep:
        return RowsPerStep(self.rows_per_step)


def step_blocks(spec: Specialization, target: Target) -> SteppedBlocks | None:
    """LayerNorm's one-pass grid, or None for two passes.

    The block's fp32 partials and gamma take about 3 registers per column
    of a lane, a row's dY and X 2 more per row in the step. Several rows per
    step share the partials (16-bit only: f32 rows already carry twice the
    bytes). Rows of up to 512 lanes x one 16-byte vector take 4 rows per
    step, so 512 / threads workgroups per SM/CU fit, and the grid is that
    many per SM/CU, rounded down to a power of two, with blocks of >= 32 rows
    (large M only); longer rows (two vectors a lane) take 2 rows per step on
    row_blocks' grid (docs/performance.md, change 40)."""
    base = schedules.row_blocks(spec, target)
    if base is None:
        return None
    if ITEMSIZE[spec.dtype] != 2:
        return SteppedBlocks(*base, 1)
    lanes = target.subgroup_size
    per_subgroup = lanes * spec.vector
    subgroups = spec.n // per_subgroup
    if spec.n % per_subgroup == 0 and lanes * subgroups <= 512:
        per_unit = max(1, 512 // (lanes * subgroups))
        grid = 1 << int(math.log2(target.compute_units * per_unit))
        if spec.m % (grid * 32) == 0:
            return SteppedBlocks(grid, spec.m // grid, subgroups, 4)
        return SteppedBlocks(*base, 1)
    return SteppedBlocks(*base, 2 if base.rows % 2 == 0 else 1)


def partial_layout(spec: Specialization, target: Target, blocks: int) -> dict[str, str]:
    """Layout of the two-pass design's [G, 2, N] partial column sums
    (column_sums_blocked.mlir): G innermost on GPUs where G is large or the
    problem small, which makes the final sum cheap, else [G, 2, N], whose
    writes are contiguous (docs/performance.md, "Numbers behind the design rules")."""
    if target.is_gpu and (blocks >= 512 or not spec.is_large()):
        return {"PARTIALS": f"2x?x{blocks}x{spec.accumulator}", "PARTIAL_INDEX": "(k, j, g)"}
    return {"PARTIALS": f"{blocks}x2x?x{spec.accumulator}", "PARTIAL_INDEX": "(g, k, j)"}


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


def statistics_fields(spec: Specialization, target: Target, configs: RowConfigs | None) -> dict[str, str]:
    """row_statistics.mlir's fields: the row dispatch's schedule, or IREE's
    choice; long rows on CPUs take the two-level row sums instead."""
    if schedules.blocked_row_sums(spec, target):
        return {"ROW_STATISTICS": "row_statistics_blocked.mlir", "ROW_SUM_BLOCKED": "row_sum_blocked.mlir"}
    return {
        "ROW_STATISTICS": "row_statistics.mlir",
        "STATS_SUM_CONFIG": configs.reduction if configs else "",
        "STATS_ROOT_CONFIG": configs.root if configs else "",
    }


def forward_fields(spec: Specialization, target: Target, schedule: tuple[int, int, int] | None) -> dict[str, str]:
    """The forward's fields for ``schedule`` ((subgroups, step, rows) of
    ``schedules.row_configs``, or None for IREE's choice)."""
    configs = schedules.row_configs(spec, target, *schedule) if schedule is not None else None
    return {**statistics_fields(spec, target, configs), "FORWARD_Y_CONFIG": configs.elementwise if configs else ""}


def forward_design(spec: Specialization, target: Target) -> dict[str, str]:
    return forward_fields(spec, target, schedules.forward_schedule(spec, target))


def backward_fields(spec: Specialization, target: Target, one_pass: SteppedBlocks | None) -> dict[str, str]:
    """The backward's fields: one pass over ``one_pass``'s row blocks, or two passes for None."""
    # dX's and the second row sum's gamma * dY as fma operands for 16-bit
    # data: with several rows per step it is not kept on its own, which
    # saves registers; f32 measured slower with it (docs/performance.md,
    # change 40).
    products = "fused" if ITEMSIZE[spec.dtype] == 2 else "separate"
    fields = {
        **statistics_fields(spec, target, None),
        "ROW_SUM_GC_XHAT_BODY": "row_sum_gc_xhat_body.mlir",
        "GC_TERM": f"gc_term_{products}.mlir",
        "DX_BODY": "dx_body.mlir",
        "DX_NUMERATOR": f"dx_numerator_{products}.mlir",
    }
    if one_pass is not None:
        return {**fields, **one_pass_fields(spec, target, one_pass), "STATS_BARRIER": stats_barrier(spec, True)}
    configs = schedules.backward_row_configs(spec, target)
    return {
        **fields,
        "GRADIENT_PASSES": "row_then_column_passes.mlir",
        "ROW_SUM_G_BODY": "row_sum_g_body.mlir",
        "ROW_SUM_CONFIG": configs.reduction if configs else "",
        "ROW_ROOT_CONFIG": configs.root if configs else "",
        "ROW_DX_CONFIG": configs.elementwise if configs else "",
        "STATS_BARRIER": stats_barrier(spec, configs is not None),
        **column_sums_fields(spec, target),
    }


def one_pass_fields(spec: Specialization, target: Target, one_pass: SteppedBlocks) -> dict[str, str]:
    """row_block_pass.mlir's fields: the shared row-block schedule with two
    column sums, and LayerNorm's own choices."""
    return {
        "GRADIENT_PASSES": "row_block_pass.mlir",
        **schedules.row_block_schedule(spec, target, one_pass.grid, COLUMN_SUMS, one_pass.walk).template,
        "PARTIALS": f"{one_pass.blocks}x{COLUMN_SUMS}x?x{spec.accumulator}",
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


def column_sums_fields(spec: Specialization, target: Target) -> dict[str, str]:
    """The two-pass design's column sums of dY and dY * x_hat: one reduction
    over all rows (column_sums_direct.mlir), or for static M blocked partials
    and their final sums (column_sums_blocked.mlir)."""
    blocks = schedules.column_blocks(spec, target)
    if blocks is None:
        return {"COLUMN_SUMS": "column_sums_direct.mlir"}
    layout = partial_layout(spec, target, blocks[0])
    blocked = {
        "COLUMN_SUMS": "column_sums_blocked.mlir",
        "G": str(blocks[0]),
        "R": str(blocks[1]),
        "PARTIAL_CONFIG": schedules.partial_config(spec, target, blocks[1], COLUMN_SUMS),
        **layout,
    }
    # On GPUs, [G, 2, N] partials are summed by a scheduled op over their
    # two [G, N] slices (IREE's own 3-D op was slow); else by one op over the whole.
    final_config = schedules.partial_sum_config(spec, target.subgroup_size, blocks[0]) if target.is_gpu else ""
    if final_config and layout["PARTIAL_INDEX"] == "(g, k, j)":
        return {**blocked, "FINAL_SUMS": "column_sums_two_results.mlir", "PARTIAL_SUM_CONFIG": final_config}
    return {**blocked, "FINAL_SUMS": "column_sums_joint.mlir"}


def backward_design(spec: Specialization, target: Target) -> dict[str, str]:
    return backward_fields(spec, target, step_blocks(spec, target))


def backward_library_for(spec: Specialization, target: Target, one_pass: SteppedBlocks | None) -> str:
    """The one-pass backward's per-op lowering configs, or "" for two passes (None)."""
    if one_pass is None:
        return ""
    return schedules.row_block_schedule(spec, target, one_pass.grid, COLUMN_SUMS, one_pass.walk).library_source()


def backward_library(spec: Specialization, target: Target) -> str:
    return backward_library_for(spec, target, step_blocks(spec, target))


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
