"""RMSNorm over the last dim: its kernels, their entry points and argument
roles, and the design rules that fill its templates (mlir/rmsnorm_*.mlir).

The design reuses LayerNorm's. The forward is its GPU row dispatch (the row
held in registers, read once). The backward, for static shapes on CUDA/ROCm
chips with known figures, is its one-pass row-block design
(rmsnorm_row_block_pass.mlir: LayerNorm's row_blocks, row_block_configs
and transform library with one column sum, so the block's register-held
fp32 partials are half of LayerNorm's); elsewhere its two passes: the row
dispatch (several subgroups per row on GPUs), then dgamma from blocked
partials of one sum with LayerNorm's block sizes and schedules for static M,
or from LayerNorm's column sums fed a zero mean for dynamic M."""

from __future__ import annotations

from ..specialization import Arg, Entry, Kernel, Role, Specialization
from ..targets import Target
from . import layernorm


def stats_barrier(spec: Specialization, needed: bool) -> str:
    """Defines %rstd from %rstd_fused in the recompute entry: through an
    optimization barrier when the row dispatch has a hand-set schedule, so
    that the statistics keep a dispatch of their own (as in LayerNorm's), else
    as a plain alias (a barrier on dynamic tensors hides their dims from IREE)."""
    stats = f"tensor<{'?' if spec.m is None else spec.m}x{spec.accumulator}>"
    if needed:
        return f"%rstd = util.optimization_barrier %rstd_fused : {stats}"
    return f"%rstd = tensor.cast %rstd_fused : {stats} to {stats}"


def forward_design(spec: Specialization, target: Target) -> dict[str, str]:
    fields = {"RMS_STATISTICS": "rms_statistics.mlir", "RMS_SQ_SUM_CONFIG": "", "RMS_Y_CONFIG": ""}
    schedule = layernorm.forward_schedule(spec, target)
    if schedule is not None:
        configs = layernorm.forward_configs(spec, target, *schedule)
        fields.update(RMS_SQ_SUM_CONFIG=configs["STATS_ROOT_CONFIG"], RMS_Y_CONFIG=configs["FORWARD_Y_CONFIG"])
    return fields


# Parts both backward designs share: the bodies of the per-row sum of g * x_hat
# and of dX, and the final sum of [G, N] partials into dgamma.
_SHARED_PARTS = {
    "RMS_ROW_SUM_BODY": "rms_row_sum_g_xhat_body.mlir",
    "RMS_DX_BODY": "rms_dx_body.mlir",
    "RMS_PARTIALS_SUM": "rms_partials_sum.mlir",
}
# Column sums per row block: dgamma alone.
_COLUMN_SUMS = 1


def backward_design(spec: Specialization, target: Target) -> dict[str, str]:
    fields = {"RMS_STATISTICS": "rms_statistics.mlir", "RMS_SQ_SUM_CONFIG": "", **_SHARED_PARTS}
    one_pass = layernorm.row_blocks(spec, target)
    if one_pass is not None:
        return {
            **fields,
            **layernorm.row_block_configs(spec, target, *one_pass, sums=_COLUMN_SUMS),
            "GRADIENT_PASSES": "rmsnorm_row_block_pass.mlir",
            "STATS_BARRIER": stats_barrier(spec, True),
        }
    configs = layernorm.row_configs(spec, target)
    return {
        **fields,
        "GRADIENT_PASSES": "rmsnorm_row_then_column_passes.mlir",
        "ROW_ROOT_CONFIG": configs["ROW_ROOT_CONFIG"],
        "ROW_DX_CONFIG": configs["ROW_DX_CONFIG"],
        "STATS_BARRIER": stats_barrier(spec, bool(configs["ROW_ROOT_CONFIG"])),
        **column_sums_fields(spec, target),
    }


def column_sums_fields(spec: Specialization, target: Target) -> dict[str, str]:
    """The two-pass design's dgamma: for static M, LayerNorm's blocks
    (layernorm.column_blocks) and partial schedules with one sum
    (rms_column_sums_blocked.mlir); else LayerNorm's one reduction over all
    rows fed a zero mean (column_sums_direct.mlir)."""
    blocks = layernorm.column_blocks(spec, target)
    if blocks is None:
        return {"COLUMN_SUMS": "column_sums_direct.mlir"}
    return {
        "COLUMN_SUMS": "rms_column_sums_blocked.mlir",
        "G": str(blocks[0]),
        "R": str(blocks[1]),
        "PARTIAL_CONFIG": layernorm.partial_config(spec, target, blocks[1], sums=None),
        "PARTIAL_SUM_CONFIG": layernorm.partial_sum_config(spec, target.subgroup_size, blocks[0]) if target.is_gpu else "",
    }


def backward_library(spec: Specialization, target: Target) -> str:
    """The one-pass backward's per-op lowering configs, or "" for two passes."""
    return layernorm.row_block_library(spec, target, sums=_COLUMN_SUMS)


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
