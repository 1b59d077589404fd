"""Random inputs, drawn once per dtype and shape for every op timed on them
(`bench`) or run (`lnbwd-iree run`); per-row statistics come from the
reference formula of the op's forward, in the arithmetic type."""

from __future__ import annotations

import numpy as np

from ..dtypes import STATS_DTYPES, STORAGE_DTYPES
from ..specialization import Role
from .cases import TIMED_OPS, Case, TimedOp, role_shapes, statistics_source
from .timing import input_sets

# What each named input of an entry point is, from a float32 draw z (standard
# normal, or CK's integers in [-5, 5]): X off-centre so that the mean matters,
# gamma around one.
DRAWS = {
    "dy": (Role.ROWS, lambda z: z),
    "x": (Role.ROWS, lambda z: z * 2 + 0.5),
    "gamma": (Role.COLUMNS, lambda z: 1 + 0.5 * z),
    "beta": (Role.COLUMNS, lambda z: 0.5 * z),
}


def parse_shape(text: str) -> tuple[int, int]:
    try:
        m, n = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise ValueError(f"shape must look like 8192x4096, got {text!r}") from e
    if m <= 0 or n <= 0:
        raise ValueError(f"shape dims must be positive, got {text!r}")
    return m, n


def draw(rng, m: int, n: int, dtype: str, *, integers: bool = False, names=tuple(DRAWS)) -> dict[str, np.ndarray]:
    """The inputs ``names`` (of ``DRAWS``) in the storage dtype."""
    shapes = role_shapes(m, n)
    drawn = {}
    for name in names:
        role, transform = DRAWS[name]
        shape = shapes[role]
        z = rng.integers(-5, 6, shape).astype(np.float32) if integers else rng.standard_normal(shape, np.float32)
        drawn[name] = transform(z).astype(STORAGE_DTYPES[dtype])
    return drawn


def arguments(op: TimedOp, values: dict) -> tuple:
    """``op``'s inputs in its entry's order, taken by name from ``values``."""
    missing = [a.name for a in op.entry.inputs if a.name not in values]
    if missing:
        raise ValueError(f"{op.entry.name} takes {missing}, which neither inputs.DRAWS nor its statistics give")
    return tuple(values[a.name] for a in op.entry.inputs)


def statistics(op: TimedOp, drawn: dict, dtype: str) -> dict[str, np.ndarray]:
    """The per-row statistics ``op`` takes, by name, from its forward's formula on ``drawn``."""
    source = statistics_source(op)
    if source is None:
        return {}
    arithmetic = STATS_DTYPES[dtype]
    outputs = source.reference(*arguments(source, drawn), **source.scalars, to=lambda a: np.asarray(a, arithmetic))
    return {a.name: np.asarray(o, arithmetic) for a, o in zip(source.entry.outputs, outputs) if a.name in op.statistics}


def op_inputs(op: TimedOp, drawn: dict, dtype: str) -> tuple:
    """``op``'s inputs: ``drawn`` and the statistics of X."""
    return arguments(op, {**drawn, **statistics(op, drawn, dtype)})


def cases(rng, dtype: str, m: int, n: int, ops, l2_bytes: int):
    """The cases of ``ops`` at one shape and dtype, on one draw of inputs; the
    row inputs of each are rotated among sets that exceed twice ``l2_bytes``."""
    drawn = draw(rng, m, n, dtype)
    for op in ops:
        inputs = op_inputs(op, drawn, dtype)
        rows, rest = inputs[:op.rotated], inputs[op.rotated:]
        n_sets = input_sets(sum(a.nbytes for a in rows), l2_bytes)
        yield Case(op, dtype, m, n, rows, rest, op.reference(*inputs, **op.scalars), n_sets)


def make_inputs(rng, m, n, dtype):
    """LayerNorm backward's inputs: dY, X, gamma in the storage dtype and X's mean and rstd."""
    return op_inputs(TIMED_OPS["backward"], draw(rng, m, n, dtype), dtype)
