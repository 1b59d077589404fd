"""RMSNorm over the last dim: its kernels, their entry points and argument
roles, and the design rules that fill its templates (mlir/rmsnorm_*.mlir).

The design reuses LayerNorm's: the forward's GPU row dispatch (the row held
in registers, read once), and its two-pass backward: the row dispatch
(several subgroups per row on GPUs) and the column sums (blocked partials
for static M), which give dgamma when the mean is zero. LayerNorm's one-pass
row-block backward is not used yet: RMSNorm's backward reads dY and X twice."""

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


def backward_design(spec: Specialization, target: Target) -> dict[str, str]:
    configs = layernorm.row_configs(spec, target)
    return {
        "RMS_STATISTICS": "rms_statistics.mlir",
        "RMS_SQ_SUM_CONFIG": "",
        "ROW_ROOT_CONFIG": configs["ROW_ROOT_CONFIG"],
        "ROW_DX_CONFIG": configs["ROW_DX_CONFIG"],
        "STATS_BARRIER": stats_barrier(spec, bool(configs["ROW_ROOT_CONFIG"])),
        **layernorm.column_sums_fields(spec, target),
    }


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
)
RMSNORM_FORWARD = Kernel(
    "rmsnorm_forward",
    (Entry("rmsnorm_forward", (_X, _GAMMA), (Arg("y", Role.ROWS), _RSTD), ("eps",)),),
    forward_design,
    per_n=True,
)
KERNELS = (RMSNORM_BACKWARD, RMSNORM_FORWARD)
