"""The seam between ops and the machinery: what an op declares, and the
specialisations its templates are rendered for.

An op (a module of ``lnbwd_iree.ops``, listed in ``lnbwd_iree.kernels``) is one or more ``Kernel``s: a compiled
module each, rendered from its MLIR template by the op's own design rules
(``Kernel.design``), with entry points whose arguments have ``Role``s that
the runtime's one generic launcher validates, allocates and passes by.

A specialisation fixes the storage dtype and, optionally, M and N. Its
signature follows sharktank's mangling: ``DxDxf32`` is dynamic M and N in f32,
``8192x4096xbf16`` static. Dynamic artifacts serve every shape; static ones
exist for speed on shapes that matter."""

from __future__ import annotations

import enum
import functools
import hashlib
from dataclasses import dataclass
from typing import Callable

from .dtypes import ACCUMULATOR, DTYPES, ITEMSIZE
from .targets import Target
from .template import render


class Role(enum.Enum):
    """What an entry point's tensor argument is, which decides its shape and dtype."""

    ROWS = "rows"  # [..., N] in the storage dtype; every one of a call has the same shape
    COLUMNS = "columns"  # [N] in the storage dtype (gamma, beta, dgamma)
    ROW_STATS = "row statistics"  # one per row in the arithmetic type (mean, rstd)


@dataclass(frozen=True)
class Arg:
    name: str
    role: Role


@dataclass(frozen=True)
class Entry:
    """A public function of a kernel's module. Its MLIR arguments are
    ``inputs``, then the f32 ``scalars`` (each a non-negative epsilon), then
    the caller-owned ``outputs`` and the transients buffer (coarse fences
    after them)."""

    name: str
    inputs: tuple[Arg, ...]
    outputs: tuple[Arg, ...]
    scalars: tuple[str, ...] = ()
    # For an empty batch (M == 0): the entry (of the same kernel, no scalars)
    # whose one-row call on zero ROWS and COLUMNS inputs and unit statistics
    # writes the zero COLUMNS outputs (column sums over no rows).
    zero_columns_from: str | None = None

    # Worked out once: the launcher reads them on every call.
    @functools.cached_property
    def labels(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The arguments' labels in aliasing errors: ("input dy", ...), ("out dx", ...)."""
        return tuple(f"input {a.name}" for a in self.inputs), tuple(f"out {a.name}" for a in self.outputs)

    @functools.cached_property
    def scalar_names(self) -> frozenset:
        return frozenset(self.scalars)


@dataclass(frozen=True)
class Kernel:
    name: str  # also the template file stem
    entries: tuple[Entry, ...]
    # The op's design rules: the template fields of a specialisation on a
    # target, and the transform library it needs ("" for none).
    design: Callable[["Specialization", Target], dict]
    library: Callable[["Specialization", Target], str] | None = None
    # One artifact per N serves every M: the kernel does no work across rows,
    # so a static M would change nothing in its code.
    per_n: bool = False

    def __post_init__(self):
        for entry in self.entries:
            if any(arg.role is Role.COLUMNS for arg in entry.outputs):
                source = next((e for e in self.entries if e.name == entry.zero_columns_from), None)
                if source is None or source.scalars:
                    raise ValueError(
                        f"{self.name}.{entry.name} has COLUMNS outputs: zero_columns_from must name an entry of"
                        f" {self.name} without scalars (found {entry.zero_columns_from!r})"
                    )

    @property
    def template(self) -> str:
        return f"{self.name}.mlir"

    @property
    def functions(self) -> tuple[str, ...]:
        return tuple(entry.name for entry in self.entries)

    @functools.cached_property
    def _entries_by_name(self) -> dict[str, Entry]:
        return {entry.name: entry for entry in self.entries}

    def entry(self, name: str) -> Entry:
        entry = self._entries_by_name.get(name)
        if entry is None:
            raise KeyError(f"{self.name} has no entry point {name!r}; it has {self.functions}")
        return entry


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

    @classmethod
    def serving(cls, kernel: Kernel, dtype: str, m: int | None, n: int | None) -> "Specialization":
        """The shape-specialised artifact that serves [m, n] calls: static M
        and N, or static N alone for ``per_n`` kernels."""
        return cls(kernel, dtype, None if kernel.per_n else m, n)

    @property
    def signature(self) -> str:
        dims = ["D" if d is None else str(d) for d in (self.m, self.n)]
        return "x".join(dims + [self.dtype])

    @property
    def stem(self) -> str:
        return f"{self.kernel.name}_{self.signature}"

    @property
    def kind(self) -> str:
        """Which of a kernel's artifacts this is: "shape-specialised" (static M
        and N), "per-N" (static N, every M) or "dynamic" (every shape)."""
        if self.m is not None:
            return "shape-specialised"
        return "per-N" if self.n is not None else "dynamic"

    @property
    def vector(self) -> int:
        """Elements per 16-byte access, the width GPU schedules load."""
        return 16 // ITEMSIZE[self.dtype]

    @property
    def accumulator(self) -> str:
        return ACCUMULATOR[self.dtype]

    def is_large(self) -> bool:
        """Static shapes whose dY and X exceed 64 MiB: bandwidth-bound on GPUs."""
        return 2 * self.m * (self.n or 1) * ITEMSIZE[self.dtype] >= 64 << 20

    def fields(self) -> dict[str, str]:
        """The template fields every op's templates share: storage and arithmetic type, M and N."""
        return {
            "T": self.dtype,
            "A": self.accumulator,
            "M": "?" if self.m is None else str(self.m),
            "N": "?" if self.n is None else str(self.n),
        }

    def source(self, target: Target) -> str:
        return render(self.kernel.template, {**self.fields(), **self.kernel.design(self, target)})

    def transform_library(self, target: Target) -> str:
        """The transform library iree-compile needs for this specialisation
        (--iree-codegen-transform-dialect-library), or "" for none."""
        return self.kernel.library(self, target) if self.kernel.library is not None else ""

    def source_hash(self, target: Target) -> str:
        """SHA-256 of everything compiled besides the flags: the source and its transform library."""
        return hashlib.sha256((self.source(target) + self.transform_library(target)).encode()).hexdigest()


def compilation_info(tiles: str, threads: int, subgroup: int, pipeline: str = "TileAndFuse") -> str:
    """A compilation_info attribute entry for a linalg op: lowering config
    ``tiles`` run by ``pipeline`` (an IREE GPU pipeline's name, or a
    pipeline attribute) with ``threads`` per workgroup."""
    if not pipeline.startswith("#"):
        pipeline = f"#iree_gpu.pipeline<{pipeline}>"
    return (
        ", compilation_info = #iree_codegen.compilation_info<"
        f"lowering_config = #iree_gpu.lowering_config<{{{tiles}}}>, "
        f"translation_info = #iree_codegen.translation_info<pipeline = {pipeline} "
        f"workgroup_size = [{threads}, 1, 1] subgroup_size = {subgroup}>>"
    )
