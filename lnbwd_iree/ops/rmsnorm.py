"""RMSNorm over the last dim: its kernels, their entry points and argument
roles, and its choices among the shared schedule rules (``ops.schedules``)
that fill its templates (mlir/rmsnorm_*.mlir).

The forward is one row dispatch (the row held in registers on GPUs, read
once). The backward, for static shapes on CUDA/ROCm chips with known
figures, is one pass over row blocks (rmsnorm_row_block_pass.mlir) with one
column sum, one row per loop step; elsewhere two passes: the row dispatch,
then dgamma from blocked partials of one sum for static M, or from the
shared one reduction over all rows (column_sums_direct.mlir) fed a zero
mean for dynamic M."""

from __future__ import annotations

from ..specialization import Arg, Entry, Kernel, Role, Specialization
from ..targets import Target
from . import schedules

# Column sums per block: dgamma alone.
COLUMN_SUMS = 1
# RMSNorm's one pass (rmsnorm_row_block_pass.mlir) has no step dim: a block's
# rows are walked one per loop step.
ONE_PASS_WALK = schedules.OneRowPerStep()


def stats_barrier(spec: Specialization, needed: bool) -> str:
    """Defines %rstd from %rstd_fused in the recompute entry: through an
    optimization barrier when the row dispatch has a hand-set schedule, so
    that the statistics keep a dispatch of their own, else as a plain alias
    (a barrier on dynamic tensors hides their dims from IREE)."""
    stats = f"tensor<{'?' if spec.m is None else spec.m}x{spec.accumulator}>"
    if needed:
        return f"%rstd = util.optimization_barrier %rstd_fused : {stats}"
    return f"%rstd = tensor.cast %rstd_fused : {stats} to {stats}"


def forward_fields(spec: Specialization, target: Target, schedule: tuple[int, int, int] | None) -> dict[str, str]:
    """The forward's fields for ``schedule`` ((subgroups, step, rows) of
    ``schedules.row_configs``, or None for IREE's choice): its one row
    reduction takes the root's schedule."""
    configs = schedules.row_configs(spec, target, *schedule) if schedule is not None else None
    return {**statistics_fields(spec, target, configs.root if configs else ""),
            "RMS_Y_CONFIG": configs.elementwise if configs else ""}


def statistics_fields(spec: Specialization, target: Target, sq_sum_config: str) -> dict[str, str]:
    """rms_statistics.mlir's fields (its row reduction's schedule, or IREE's
    choice); long rows on CPUs take the two-level row sum instead."""
    if schedules.blocked_row_sums(spec, target):
        return {"RMS_STATISTICS": "rms_statistics_blocked.mlir", "ROW_SUM_BLOCKED": "row_sum_blocked.mlir"}
    return {"RMS_STATISTICS": "rms_statistics.mlir", "RMS_SQ_SUM_CONFIG": sq_sum_config}


def forward_design(spec: Specialization, target: Target) -> dict[str, str]:
    return forward_fields(spec, target, schedules.forward_schedule(spec, target))


def backward_fields(spec: Specialization, target: Target, one_pass: schedules.RowBlocks | None) -> dict[str, str]:
    """The backward's fields: one pass over ``one_pass``'s row blocks, or two passes for None."""
    # Both designs take the bodies of the per-row sum of g * x_hat and of dX.
    fields = {
        **statistics_fields(spec, target, ""),
        "RMS_ROW_SUM_BODY": "rms_row_sum_g_xhat_body.mlir",
        "RMS_DX_BODY": "rms_dx_body.mlir",
    }
    if one_pass is not None:
        return {
            **fields,
            **schedules.row_block_schedule(spec, target, one_pass, COLUMN_SUMS, ONE_PASS_WALK).template,
            "GRADIENT_PASSES": "rmsnorm_row_block_pass.mlir",
            "RMS_PARTIALS_SUM": "rms_partials_sum.mlir",
            "STATS_BARRIER": stats_barrier(spec, True),
        }
    configs = schedules.backward_row_configs(spec, target)
    return {
        **fields,
        "GRADIENT_PASSES": "rmsnorm_row_then_column_passes.mlir",
        "ROW_ROOT_CONFIG": configs.root if configs else "",
        "ROW_DX_CONFIG": configs.elementwise if configs else "",
        "STATS_BARRIER": stats_barrier(spec, configs is not None),
        **column_sums_fields(spec, target),
    }


def column_sums_fields(spec: Specialization, target: Target) -> dict[str, str]:
    """The two-pass design's dgamma: for static M, the shared blocks and
    partial schedules with one sum (rms_column_sums_blocked.mlir); else the
    shared one reduction over all rows fed a zero mean (column_sums_direct.mlir)."""
    blocks = schedules.column_blocks(spec, target)
    if blocks is None:
        return {"COLUMN_SUMS": "column_sums_direct.mlir"}
    return {
        "COLUMN_SUMS": "rms_column_sums_blocked.mlir",
        "G": str(blocks[0]),
        "R": str(blocks[1]),
        "PARTIAL_CONFIG": schedules.partial_config(spec, target, blocks[1], COLUMN_SUMS),
        "RMS_PARTIALS_SUM": "rms_partials_sum.mlir",
        "PARTIAL_SUM_CONFIG": schedules.partial_sum_config(spec, target.subgroup_size, blocks[0]) if target.is_gpu else "",
    }


def backward_design(spec: Specialization, target: Target) -> dict[str, str]:
    return backward_fields(spec, target, schedules.row_blocks(spec, target))


def backward_library_for(spec: Specialization, target: Target, one_pass: schedules.RowBlocks | None) -> str:
    """The one-pass backward's per-op lowering configs, or "" for two passes (None)."""
    if one_pass is None:
        return ""
    return schedules.row_block_schedule(spec, target, one_pass, COLUMN_SUMS, ONE_PASS_WALK).library_source()


def backward_library(spec: Specialization, target: Target) -> str:
    return backward_library_for(spec, target, schedules.row_blocks(spec, target))


_DY, _X, _GAMMA = Arg("dy", Role.ROWS), Arg("x", Role.ROWS), Arg("gamma", Role.COLUMNS)
_RSTD = Arg("rstd", Role.ROW_STATS)
_GRADIENTS = (Arg("dx", Role.ROWS), Arg("dgamma", Role.COLUMNS))

RMSNORM_BACKWARD = Kernel(
    "rmsnorm_backward",
    (
        Entry("rmsnorm_backward", (_DY, _X, _GAMMA, _RSTD), _GRADIENTS, (), "rmsnorm_backward"),
        Entry("rmsnorm_backward_recompute", (_DY, _X, _GAMMA), _GRADIENTS, ("eps",), "rmsnorm_backward"),
    ),
    backward_design,
    backward_library,
)
RMSNORM_FORWARD = Kernel(
    "rmsnorm_forward",
    (Entry("rmsnorm_forward", (_X, _GAMMA), (Arg("y", Role.ROWS), _RSTD), ("eps",)),),
    forward_design,
    per_n=True,
)
KERNELS = (RMSNORM_BACKWARD, RMSNORM_FORWARD)
