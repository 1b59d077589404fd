"""The kernels: one MLIR template each, specialised by a mangled signature.

A specialisation fixes the storage dtype and, optionally, M and N. Its
signature follows sharktank's mangling: ``DxDxf32`` is dynamic M and N in f32,
``8192x4096xbf16`` static. Dynamic artifacts serve every shape; static ones
exist for speed on shapes that matter."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from . import row_block_pipeline
from .targets import Target
from .template import render

DTYPES = ("f32", "f16", "bf16", "f64")
ITEMSIZE = {"f32": 4, "f16": 2, "bf16": 2, "f64": 8}
# Elements of a row the forward holds in registers at once: 64 KiB of f32 per
# workgroup, 16 per thread at 1024 threads. bf16 rows of 65536 held whole
# (64 per thread) spilled 121 VGPRs on gfx942.
FORWARD_ROW_IN_REGISTERS = 16384
# Arithmetic and statistics type per storage type: f32, but f64 for f64
# (which exists so torch.autograd.gradcheck can run in double precision).
ACCUMULATOR = {"f32": "f32", "f16": "f32", "bf16": "f32", "f64": "f64"}


def subgroup_size(target: Target) -> int:
    """Lanes per subgroup the GPU schedules assume: wave64 on CDNA (gfx9), else 32."""
    return 64 if target.chip.startswith("gfx9") else 32


@dataclass(frozen=True)
class Kernel:
    name: str  # also the template file stem
    functions: tuple[str, ...]  # public functions of the module
    # One artifact per N serves every M: the kernel does no work across rows,
    # so a static M would change nothing in its code.
    per_n: bool = False


LAYERNORM_BACKWARD = Kernel("layernorm_backward", ("layernorm_backward", "layernorm_backward_recompute"))
LAYERNORM_FORWARD = Kernel("layernorm_forward", ("layernorm_forward",), per_n=True)
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
    def vector(self) -> int:
        """Elements per 16-byte access, the width GPU schedules load."""
        return 16 // ITEMSIZE[self.dtype]

    def is_large(self) -> bool:
        """Static shapes whose dY and X exceed 64 MiB: bandwidth-bound on GPUs."""
        return 2 * self.m * (self.n or 1) * ITEMSIZE[self.dtype] >= 64 << 20

    def column_blocks(self, target: Target) -> tuple[int, int] | None:
        """(G, R): the column sums run over G blocks of R rows (M = G * R) when
        M is static; None for a single reduction over all M rows."""
        if self.m is None:
            return None
        if not target.is_gpu:
            # CPUs walk each block's rows in order; with the partials schedule
            # of partial_config, R from 16 to 64 measured alike on a 2-core x86
            # (36 ms at 8192x4096 f32), and larger R shrinks the final sum.
            rows = next((r for r in (64, 32, 16, 8, 4, 2) if self.m % r == 0), None)
            return (self.m // rows, rows) if rows else None
        # GPUs: the partials take ~R serial steps per thread and the final sum
        # ~G, so G ~ sqrt(M) balances the two for small problems; large ones
        # (dY + X over 64 MiB) are bandwidth-bound and need G * N / 16-byte
        # threads >= 2^17 to keep enough loads in flight.
        blocks = 1 << math.ceil(math.log2(math.sqrt(self.m)))
        if self.is_large():
            blocks = max(blocks, 1 << math.ceil(math.log2(2**17 * self.vector / (self.n or 1))))
        blocks = min(blocks, self.m // 2)
        while blocks > 1 and self.m % blocks:
            blocks //= 2
        return (blocks, self.m // blocks) if blocks > 1 else None

    def partial_layout(self, target: Target, blocks: int) -> dict[str, str]:
        """Layout of the [G, 2, N] partial column sums (column_sums_blocked.mlir).
        On the H100, G innermost ([2, N, G]) cut the final sum from 52 to 5 us
        at 65536x768 (G = 1024) and small shapes by ~20 us, but its strided
        writes cost 15-40 us on large shapes with G <= 256, where the final sum
        over [G, 2, N] took ~8 us."""
        if target.is_gpu and (blocks >= 512 or not self.is_large()):
            return {"PARTIALS": f"2x?x{blocks}x{ACCUMULATOR[self.dtype]}", "PARTIAL_INDEX": "(k, j, g)"}
        return {"PARTIALS": f"{blocks}x2x?x{ACCUMULATOR[self.dtype]}", "PARTIAL_INDEX": "(g, k, j)"}

    def partial_config(self, target: Target, rows: int) -> str:
        """compilation_info for the blocked partial column sums on GPU and
        llvm-cpu targets (see column_sums_blocked.mlir), or "" to leave the
        choice to IREE (vmvx)."""
        if target.backend == "llvm-cpu":
            return self._cpu_partial_config()
        if not target.is_gpu or self.n is None:
            return ""
        vector = self.vector
        subgroup = subgroup_size(target)
        threads = next((t for t in (128, 64, 32) if t >= subgroup and self.n % (t * vector) == 0), None)
        if threads is None:
            return ""
        return self._compilation_info(
            f"workgroup = [1, 2, {threads * vector}, 0], thread = [0, 2, {vector}, 0], "
            f"reduction = [0, 0, 0, {min(8, rows)}]",
            threads,
            subgroup,
        )

    @staticmethod
    def _cpu_partial_config() -> str:
        """llvm-cpu schedule for the partials (iterated (g, k, j, r)): vectors of
        64 columns for both k, one row r per step. IREE's default vectorised
        along r, transposing each strided [j, r] tile (8192x4096 f32: partials
        ~45 ms, total 75 ms); this one reads rows contiguously (12 ms, total 36 ms)."""
        return (
            ", compilation_info = #iree_codegen.compilation_info<"
            "lowering_config = #iree_cpu.lowering_config<distribution = [32, 2, 1024, 0], "
            "vector_common_parallel = [1, 2, 64, 0], vector_reduction = [0, 0, 0, 1]>, "
            "translation_info = #iree_codegen.translation_info<pipeline = #iree_cpu.pipeline<DoubleTilingExpert>>>"
        )

    @staticmethod
    def _compilation_info(tiles: str, threads: int, subgroup: int, pipeline: str = "TileAndFuse") -> str:
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

    def row_configs(self, target: Target) -> dict[str, str]:
        """Schedules for the dispatch that holds both row reductions and dX on
        GPU targets with static N. IREE's default gives each row one subgroup;
        with up to 32 rows in flight per SM their dY and X rows (2 * N *
        itemsize bytes each) overflow L1 and L2 before the second and third
        pass over the row re-read them. Several subgroups per row keep fewer
        rows in flight, so the re-reads hit cache."""
        empty = {"ROW_SUM_CONFIG": "", "ROW_ROOT_CONFIG": "", "ROW_DX_CONFIG": ""}
        if not target.is_gpu or self.n is None:
            return empty
        vector = self.vector
        lanes = subgroup_size(target)
        # One thread per 128 bytes of a row's dY and X: with up to 2048 threads
        # per SM/CU, the rows in flight then total about 256 KiB, what its L1
        # holds, so the second and third pass over a row hit L1.
        row_bytes = 2 * self.n * ITEMSIZE[self.dtype]
        wanted = min(1024, max(64, row_bytes // 128)) // lanes
        subgroups = next(
            (s for s in (32, 16, 8, 4, 2, 1) if s <= max(wanted, 1) and self.n % (lanes * s * vector) == 0), None
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
            "ROW_ROOT_CONFIG": self._compilation_info(root, lanes * subgroups, lanes, "VectorDistribute"),
            "ROW_DX_CONFIG": f", lowering_config = {elementwise}",
        }

    def forward_schedule(self, target: Target) -> tuple[int, int, int] | None:
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
        if not target.is_gpu or self.n is None:
            return None
        lanes = subgroup_size(target)
        per_subgroup = lanes * self.vector
        if self.n % per_subgroup:
            return None
        subgroups = max(1, min(1024 // lanes, self.n // (4 * per_subgroup)))
        while self.n % (subgroups * per_subgroup):
            subgroups -= 1
        batch = subgroups * per_subgroup
        if self.n <= FORWARD_ROW_IN_REGISTERS:
            return subgroups, self.n, 1
        step = next(k * batch for k in range(FORWARD_ROW_IN_REGISTERS // batch, 0, -1) if self.n % (k * batch) == 0)
        return subgroups, step, 1

    def forward_configs(self, target: Target, subgroups: int, step: int, rows: int = 1) -> dict[str, str]:
        """Template fields of the forward's one dispatch (the two row
        statistics and Y): ``rows`` rows per workgroup, each spread over
        ``subgroups`` subgroups, a 16-byte vector per thread, ``step``
        columns per loop step (N: the whole row at once, held in registers)."""
        lanes = subgroup_size(target)
        basis = (
            f"lane_basis = [[1, {lanes}], [0, 1]], subgroup_basis = [[{rows}, {subgroups}], [0, 1]], "
            f"thread = [{1 if rows > 1 else 0}, {self.vector}]"
        )
        root = f"{basis}, partial_reduction = [0, {step}], workgroup = [{rows}, 0]"
        return {
            "STATS_SUM_CONFIG": f", lowering_config = #iree_gpu.lowering_config<{{{basis}, partial_reduction = [0, {step}]}}>",
            "STATS_ROOT_CONFIG": self._compilation_info(root, lanes * subgroups * rows, lanes, "VectorDistribute"),
            "FORWARD_Y_CONFIG": f", lowering_config = #iree_gpu.lowering_config<{{{basis}, serial = [0, {step}]}}>",
        }

    def row_blocks(self, target: Target) -> tuple[int, int, int] | None:
        """(G, R, S) when the backward runs as one pass over dY and X
        (row_block_pass.mlir): G workgroups of S subgroups, each walking R
        rows; None for the two-pass design.

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
        if self.m is None or self.n is None or self.dtype == "f64" or target.backend not in ("cuda", "rocm"):
            return None
        if target.compute_units is None:
            return None
        lanes = subgroup_size(target)
        wanted = max(1, self.n // (lanes * 16))
        subgroups = next((s for s in range(wanted, 0, -1) if self.n % (lanes * s * self.vector) == 0), None)
        if subgroups is None or lanes * subgroups > 512 or self.n > lanes * subgroups * 32:
            return None
        partial_budget = 2**20 if ITEMSIZE[self.dtype] == 2 else 2**21
        max_blocks = min(1 << int(math.log2(8 * target.compute_units)), partial_budget // self.n)
        rows = max(32, self.m // max_blocks)
        # Halved while fewer than 2^15 threads would run (small shapes): a
        # block walks its rows one at a time.
        while rows > 2 and (self.m % rows or self.m // rows * lanes * subgroups < 2**15):
            rows //= 2
        if self.m % rows:
            return None
        return self.m // rows, rows, subgroups

    def row_block_configs(self, target: Target, blocks: int, rows: int, subgroups: int) -> dict[str, str]:
        """Template fields of row_block_pass.mlir: each row spread over the
        workgroup's lanes, then its subgroups, a 16-byte vector per thread
        and step."""
        lanes = subgroup_size(target)
        vector = self.vector

        def basis(thread: list[int]) -> str:
            # Dim 2 is the column j in all three iteration spaces: (g, r, j),
            # (g, k, j) and (g, k, j, r).
            def counts(n: int) -> str:
                values = [1] * len(thread)
                values[2] = n
                return f"[{values}, {list(range(len(thread)))}]"

            return f"lane_basis = {counts(lanes)}, subgroup_basis = {counts(subgroups)}, thread = {thread}"

        partial = f"{basis([0, 2, vector, 0])}, serial = [0, 0, 0, 1], workgroup = [1, 0, 0, 0]"
        # The textual pipeline of row_block_pipeline.py keeps the partials in
        # registers; IREE copies this op's config to every op of the dispatch,
        # and its lowering_strategy (row_block_configs.mlir) gives each op its own.
        strategy = f'{partial}, lowering_strategy = "lnbwd_row_block_configs"'
        pipeline = f'#iree_codegen.pass_pipeline<"{row_block_pipeline.PIPELINE}">'
        return {
            "G": str(blocks),
            "R": str(rows),
            "ROW_BLOCK_ROW_CONFIG": f"#iree_gpu.lowering_config<{{{basis([0, 0, vector])}}}>",
            "ROW_BLOCK_ZERO_CONFIG": f"#iree_gpu.lowering_config<{{{basis([0, 2, vector])}}}>",
            "ROW_BLOCK_PARTIAL_TILES": f"#iree_gpu.lowering_config<{{{partial}}}>",
            "ROW_BLOCK_PARTIAL_CONFIG": self._compilation_info(strategy, lanes * subgroups, lanes, pipeline),
            "PARTIALS": f"{blocks}x2x?x{ACCUMULATOR[self.dtype]}",
            "FINAL_SUMS": "column_sums_per_result.mlir",
            "PARTIAL_SUM_CONFIG": self._partial_sum_config(lanes, blocks),
            # 16-bit rows of >= 4096 elements (one or two rows in flight per
            # SM): X and the statistics enter the first row sum so that a row's
            # loads are issued together (row_block_pass.mlir). Elsewhere it
            # measured level or slower and costs registers on gfx942.
            "SUM_G_READS_X": (
                f"%load_x_first = arith.cmpf uno, %mean_s, %rstd_s : {ACCUMULATOR[self.dtype]}"
                if ITEMSIZE[self.dtype] == 2 and self.n >= 4096
                else "%load_x_first = arith.constant false"
            ),
        }

    def _partial_sum_config(self, lanes: int, blocks: int) -> str:
        """Schedule for the two sums of [G, N] partials in
        column_sums_per_result.mlir, iterated (c, g): up to 8 subgroups split
        the G rows, each thread reading one 16-byte vector of columns per row;
        "" (IREE's choice) when G or N does not split evenly."""
        vector = 16 // ITEMSIZE[ACCUMULATOR[self.dtype]]
        subgroups = next((s for s in (8, 4, 2, 1) if blocks % (lanes * s) == 0), None)
        if subgroups is None or self.n is None or self.n % vector:
            return ""
        tiles = (
            f"lane_basis = [[1, {lanes}], [0, 1]], subgroup_basis = [[1, {subgroups}], [0, 1]], thread = [{vector}, 1], "
            f"partial_reduction = [0, {lanes * subgroups}], workgroup = [{vector}, 0]"
        )
        return self._compilation_info(tiles, lanes * subgroups, lanes, "VectorDistribute")

    def stats_barrier(self, needed: bool) -> str:
        """Defines %mean, %rstd from %mean_fused, %rstd_fused in the recompute
        entry: through an optimization barrier when the row dispatch has a
        hand-set schedule (static shapes only: a barrier on dynamic tensors
        hides their dims from IREE), else as plain aliases."""
        if needed:
            stats = f"tensor<{self.m}x{ACCUMULATOR[self.dtype]}>"
            return f"%mean, %rstd = util.optimization_barrier %mean_fused, %rstd_fused : {stats}, {stats}"
        stats = f"tensor<{'?' if self.m is None else self.m}x{ACCUMULATOR[self.dtype]}>"
        return (
            f"%mean = tensor.cast %mean_fused : {stats} to {stats}\n"
            f"  %rstd = tensor.cast %rstd_fused : {stats} to {stats}"
        )

    def _fields(self) -> dict[str, str]:
        return {
            "T": self.dtype,
            "A": ACCUMULATOR[self.dtype],
            "M": "?" if self.m is None else str(self.m),
            "N": "?" if self.n is None else str(self.n),
            "GRADIENT_PASSES": "row_then_column_passes.mlir",
            "COLUMN_SUMS": "column_sums_direct.mlir",
            "STATS_SUM_CONFIG": "",
            "STATS_ROOT_CONFIG": "",
            "FORWARD_Y_CONFIG": "",
        }

    def transform_library(self, target: Target) -> str:
        """The transform library iree-compile needs for this specialisation
        (--iree-codegen-transform-dialect-library), or "" for none: the
        one-pass backward's per-op lowering configs (row_block_configs.mlir)."""
        if self.kernel.name != "layernorm_backward":
            return ""
        row_blocks = self.row_blocks(target)
        if row_blocks is None:
            return ""
        return render("row_block_configs.mlir", {**self._fields(), **self.row_block_configs(target, *row_blocks)})

    def source(self, target: Target) -> str:
        fields = self._fields()
        if self.kernel.name == "layernorm_forward":
            schedule = self.forward_schedule(target)
            if schedule is not None:
                fields.update(self.forward_configs(target, *schedule))
        if self.kernel.name == "layernorm_backward":
            row_blocks = self.row_blocks(target)
            if row_blocks is not None:
                fields.update(self.row_block_configs(target, *row_blocks))
                fields.update(GRADIENT_PASSES="row_block_pass.mlir", STATS_BARRIER=self.stats_barrier(True))
                return render(f"{self.kernel.name}.mlir", fields)
            configs = self.row_configs(target)
            fields.update(configs, STATS_BARRIER=self.stats_barrier(bool(configs["ROW_ROOT_CONFIG"])))
        blocks = self.column_blocks(target)
        if blocks is not None:
            layout = self.partial_layout(target, blocks[0])
            # On GPUs, [G, 2, N] partials are summed by one scheduled op per
            # result (8192x4096 bf16: IREE's own 3-D op took 15 us in 64
            # workgroups of 32 threads); else by one op.
            final_config = self._partial_sum_config(subgroup_size(target), blocks[0]) if target.is_gpu else ""
            per_result = bool(final_config) and layout["PARTIAL_INDEX"] == "(g, k, j)"
            fields.update(
                COLUMN_SUMS="column_sums_blocked.mlir",
                G=str(blocks[0]),
                R=str(blocks[1]),
                PARTIAL_CONFIG=self.partial_config(target, blocks[1]),
                FINAL_SUMS="column_sums_per_result.mlir" if per_result else "column_sums_joint.mlir",
                PARTIAL_SUM_CONFIG=final_config,
                **layout,
            )
        return render(f"{self.kernel.name}.mlir", fields)

    def source_hash(self, target: Target) -> str:
        """SHA-256 of everything compiled besides the flags: the source and its transform library."""
        return hashlib.sha256((self.source(target) + self.transform_library(target)).encode()).hexdigest()
