"""The kernels: one MLIR template each, specialised by a mangled signature.

A specialisation fixes the storage dtype and, optionally, M and N. Its
signature follows sharktank's mangling: ``DxDxf32`` is dynamic M and N in f32,
``8192x4096xbf16`` static. Dynamic artifacts serve every shape; static ones
exist for speed on shapes that matter."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .template import render

DTYPES = ("f32", "f16", "bf16")


@dataclass(frozen=True)
class Kernel:
    name: str  # also the template file stem
    functions: tuple[str, ...]  # public functions of the module


LAYERNORM_BACKWARD = Kernel("layernorm_backward", ("layernorm_backward", "layernorm_backward_recompute"))
LAYERNORM_FORWARD = Kernel("layernorm_forward", ("layernorm_forward",))
KERNELS = (LAYERNORM_BACKWARD, LAYERNORM_FORWARD)


@dataclass(frozen=True)
class Specialization:
    kernel: Kernel
    dtype: str
    m: int | None = None  # None: dynamic
    n: int | None = None

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"unsupported dtype {self.dtype!r}; expected one of {DTYPES}")
        for dim_name, dim in (("m", self.m), ("n", self.n)):
            if dim is not None and (not isinstance(dim, int) or dim <= 0):
                raise ValueError(f"static {dim_name} must be a positive int, got {dim!r}")

    @property
    def signature(self) -> str:
        dims = ["D" if d is None else str(d) for d in (self.m, self.n)]
        return "x".join(dims + [self.dtype])

    @property
    def stem(self) -> str:
        return f"{self.kernel.name}_{self.signature}"

    def column_blocks(self) -> tuple[int, int] | None:
        """(G, R): the column sums run over G blocks of R rows (M = G * R) when
        M is static; None for a single reduction over all M rows."""
        if self.m is None:
            return None
        rows = 1
        # Enough independent column sums (G * N) to fill a large GPU, ~2^18.
        while self.m % (rows * 2) == 0 and self.m * (self.n or 1) // (rows * 2) >= 2**18:
            rows *= 2
        return (self.m // rows, rows) if rows > 1 else None

    def source(self) -> str:
        fields = {
            "T": self.dtype,
            "M": "?" if self.m is None else str(self.m),
            "N": "?" if self.n is None else str(self.n),
            "COLUMN_SUMS": "column_sums_direct.mlir",
        }
        blocks = self.column_blocks()
        if blocks is not None:
            fields.update(COLUMN_SUMS="column_sums_blocked.mlir", G=str(blocks[0]), R=str(blocks[1]))
        return render(f"{self.kernel.name}.mlir", fields)

    def source_hash(self) -> str:
        return hashlib.sha256(self.source().encode()).hexdigest()
