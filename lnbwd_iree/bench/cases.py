"""What bench times: each kernel of the registry (``lnbwd_iree.kernels``)
through its main entry point, with that entry's float64 reference, the bytes
it must move, and one measurement (`Case`) of it at a dtype and shape."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..dtypes import STATS_DTYPES, STORAGE_DTYPES
from ..kernels import OPS, Kernel
from ..reference import REFERENCES
from ..specialization import Entry, Role

# Every scalar of a timed entry point (each is an epsilon).
EPS = 1e-5
# LayerNorm's records keep the op names they had before other ops were added,
# so that committed results still compare.
RECORD_NAMES = {"layernorm_backward": "backward", "layernorm_forward": "forward"}


@dataclass(frozen=True)
class TimedOp:
    """A kernel of op ``norm`` as bench times it: its entry point named as
    the kernel, called on ROWS inputs rotated among input sets."""

    norm: str  # the registry's op name: `bench --norm`
    kernel: Kernel

    def __post_init__(self):
        if self.kernel.name not in REFERENCES:
            raise ValueError(f"{self.kernel.name} has no float64 reference in lnbwd_iree.reference.REFERENCES")
        roles = [a.role for a in self.entry.inputs]
        if roles[:self.rotated] != [Role.ROWS] * self.rotated or Role.ROWS in roles[self.rotated:]:
            raise ValueError(f"{self.entry.name}: bench rotates the ROWS inputs, which must come first")

    @property
    def name(self) -> str:
        """The records' "op"."""
        return RECORD_NAMES.get(self.kernel.name, self.kernel.name)

    @property
    def direction(self) -> str:
        """"backward" or "forward": `bench --op` (kernels are named <op>_<direction>)."""
        return self.kernel.name.removeprefix(f"{self.norm}_")

    @property
    def entry(self) -> Entry:
        return self.kernel.entry(self.kernel.name)

    @property
    def reference(self):
        return REFERENCES[self.kernel.name]

    @property
    def rotated(self) -> int:
        """How many inputs (the first) are ROWS: each call gets its own set of them."""
        return sum(a.role is Role.ROWS for a in self.entry.inputs)

    @property
    def statistics(self) -> tuple[str, ...]:
        """The names of the per-row statistics this entry takes (from the op's forward)."""
        return tuple(a.name for a in self.entry.inputs if a.role is Role.ROW_STATS)

    @property
    def scalars(self) -> dict[str, float]:
        return {s: EPS for s in self.entry.scalars}

    def output_shapes(self, m: int, n: int) -> tuple:
        shapes = role_shapes(m, n)
        return tuple(shapes[a.role] for a in self.entry.outputs)

    def output_dtypes(self, dtype: str) -> tuple[np.dtype, ...]:
        dtypes = role_dtypes(dtype)
        return tuple(dtypes[a.role] for a in self.entry.outputs)

    @property
    def cast_outputs(self) -> tuple[bool, ...]:
        """Which outputs an implementation returns in the storage dtype (ROWS and
        COLUMNS), not the arithmetic type its formula computes in (statistics)."""
        return tuple(a.role is not Role.ROW_STATS for a in self.entry.outputs)


TIMED_OPS = {op.name: op for op in (TimedOp(norm, kernel) for norm, module in OPS.items() for kernel in module.KERNELS)}
# `bench --norm N --op D` -> the records' op name.
NORM_OPS = {norm: {op.direction: op.name for op in TIMED_OPS.values() if op.norm == norm} for norm in OPS}


def statistics_source(op: TimedOp) -> TimedOp | None:
    """The op of the same norm whose outputs include ``op``'s statistics (its forward)."""
    if not op.statistics:
        return None
    for source in TIMED_OPS.values():
        outputs = {a.name for a in source.entry.outputs if a.role is Role.ROW_STATS}
        if source.norm == op.norm and set(op.statistics) <= outputs:
            return source
    raise ValueError(f"no entry of {op.norm} outputs {op.statistics}, which {op.entry.name} takes")


def role_shapes(m: int, n: int) -> dict:
    return {Role.ROWS: (m, n), Role.COLUMNS: (n,), Role.ROW_STATS: (m,)}


def role_dtypes(dtype: str) -> dict:
    return {Role.ROWS: STORAGE_DTYPES[dtype], Role.COLUMNS: STORAGE_DTYPES[dtype], Role.ROW_STATS: STATS_DTYPES[dtype]}


def bytes_moved(m: int, n: int, dtype: str, op: str) -> int:
    """Bytes an implementation must move (docs/performance.md, Floors): each
    argument of the op's entry point read or written once. LayerNorm's
    backward: dY, X read and dX written, gamma read, dgamma, dbeta written,
    mean, rstd read; its forward: X read and Y written, gamma, beta read,
    mean, rstd written. RMSNorm's: the same without beta, dbeta and mean."""
    if op not in TIMED_OPS:
        raise ValueError(f"op must be one of {tuple(TIMED_OPS)}, got {op!r}")
    shapes, dtypes = role_shapes(m, n), role_dtypes(dtype)
    entry = TIMED_OPS[op].entry
    return sum(math.prod(shapes[a.role]) * dtypes[a.role].itemsize for a in entry.inputs + entry.outputs)


@dataclass
class Case:
    """One (op, dtype, M, N) measurement: the host inputs split into the
    per-call row inputs (rotated among ``n_sets`` sets) and the rest, and
    the float64 reference outputs."""

    op: TimedOp
    dtype: str
    m: int
    n: int
    rows: tuple
    rest: tuple
    want: tuple
    n_sets: int

    @property
    def scalars(self) -> dict[str, float]:
        return self.op.scalars

    @property
    def set_bytes(self) -> int:
        return sum(a.nbytes for a in self.rows)

    @property
    def output_shapes(self) -> tuple:
        return self.op.output_shapes(self.m, self.n)

    @property
    def output_dtypes(self) -> tuple[np.dtype, ...]:
        return self.op.output_dtypes(self.dtype)
