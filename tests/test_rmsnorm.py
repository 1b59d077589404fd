"""RMSNorm forward and backward: the float64 reference by finite differences,
the kernels on every available backend against it (poisoned outputs, odd
shapes, saved and recomputed rstd), backends against each other, bad inputs
and empty batches, and the GPU design's template fields."""

import itertools

import numpy as np
import pytest
from conftest import BACKENDS, DTYPES, TOLERANCE, assert_close, backend_id, host, open_kernels, random_problem, skip_missing_artifact, skip_unsupported

from lnbwd_iree import LayerNormKernels, rmsnorm_backward, rmsnorm_forward
from lnbwd_iree.kernels import RMSNORM_BACKWARD, RMSNORM_FORWARD, Specialization
from lnbwd_iree.ops import rmsnorm
from lnbwd_iree.reference import relative_error, rmsnorm_backward_reference, rmsnorm_forward_reference
from lnbwd_iree.runtime import STATS_DTYPES
from lnbwd_iree.targets import LLVM_CPU_HOST, Target, target_for

# The kernels take eps as a float32 (runtime.check_eps): one the reference
# sees exactly, since rows with mean(x^2) << eps (N == 1) are sensitive to it at f64 precision.
EPS = float(np.float32(1e-5))
SHAPES = [(1, 64), (17, 1), (5, 760), (64, 1000), (33, 4096), (2, 3, 96)]


def test_reference_matches_finite_differences(rng):
    """dX and dgamma of L = sum(dY * y(x, gamma)) against central differences."""
    dy, x, gamma, _ = random_problem(rng, (3, 7), "f64")

    def loss(x_, gamma_):
        return float((dy * rmsnorm_forward_reference(x_, gamma_, EPS)[0]).sum())

    _, rstd = rmsnorm_forward_reference(x, gamma, EPS)
    dx, dgamma = rmsnorm_backward_reference(dy, x, gamma, rstd)
    h = 1e-6
    for array, grad in ((x, dx), (gamma, dgamma)):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            plus, minus = array.copy(), array.copy()
            plus[index] += h
            minus[index] -= h
            args = (plus, gamma) if array is x else (x, plus)
            back = (minus, gamma) if array is x else (x, minus)
            numeric[index] = (loss(*args) - loss(*back)) / (2 * h)
        assert relative_error(grad, numeric) < 1e-7


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_forward_and_backward(kernels, rng, dtype, shape):
    skip_unsupported(kernels, dtype)
    dy, x, gamma, _ = random_problem(rng, shape, dtype)
    y_want, rstd_want = rmsnorm_forward_reference(x, gamma, EPS)
    # Results land in NaN-poisoned buffers: an element the kernel skips stays NaN.
    poisoned = [kernels.to_device(np.full(shape, np.nan, DTYPES[dtype])),
                kernels.to_device(np.full(shape[:-1], np.nan, STATS_DTYPES[dtype]))]
    y, rstd = host(kernels.rmsnorm_forward(x, gamma, eps=EPS, out=tuple(poisoned)))
    assert y.dtype == DTYPES[dtype] and rstd.dtype == STATS_DTYPES[dtype] and rstd.shape == shape[:-1]
    assert_close("y", y, y_want, TOLERANCE[dtype])
    assert_close("rstd", rstd, rstd_want, 1e-5)

    check_backward(kernels, dtype, dy, x, gamma, rstd)


def check_backward(kernels, dtype, dy, x, gamma, rstd):
    """Both backward entries, with ``rstd`` and recomputing it from X, into
    NaN-poisoned outputs (an element the kernel skips stays NaN), against
    the float64 reference."""
    shape = dy.shape
    dx_want, dgamma_want = rmsnorm_backward_reference(dy, x, gamma, rstd)
    # dX cancels (g minus its projection on x_hat): judged against ||rstd * g||,
    # and dgamma against the sums of absolute terms (see test_kernels.sum_scales).
    x_hat = np.asarray(x, np.float64) * rstd[..., None]
    dy64 = np.asarray(dy, np.float64)
    scales = (float(np.linalg.norm(dy64 * np.asarray(gamma, np.float64) * rstd[..., None])),
              float(np.linalg.norm(np.abs(dy64 * x_hat).sum(axis=tuple(range(len(shape) - 1))))))
    for stats in ((rstd,), ()):  # saved rstd, then recomputed from X
        poisoned = [kernels.to_device(np.full(s, np.nan, DTYPES[dtype])) for s in (shape, shape[-1:])]
        got = host(kernels.rmsnorm_backward(dy, x, gamma, *stats, eps=EPS, out=tuple(poisoned)))
        for name, g, w, scale in zip(("dx", "dgamma"), got, (dx_want, dgamma_want), scales):
            assert g.dtype == DTYPES[dtype] and np.isfinite(np.asarray(g, np.float64)).all(), name
            assert_close(name, g, w, TOLERANCE[dtype], scale)


@pytest.mark.parametrize(
    "dtype, shape",
    [(dtype, shape) for dtype in ("f32", "bf16")
     for shape in ((8192, 4096), (32768, 1024), (16384, 8192), (65536, 768), (4096, 16384), (1024, 512), (4096, 1024))]
    + [("f16", (8192, 4096)), ("f16", (32768, 1024))],
    ids=str,
)
def test_static_gpu_artifacts(kernels, rng, cache_dir, dtype, shape):
    """The shipped shape-specialised GPU backward: one pass over row blocks
    (all but 4096x16384, whose rows keep two passes), both entries."""
    if not kernels.target.is_gpu:
        pytest.skip("GPU schedules; test_static_shape_artifacts covers the CPU's")
    target = kernels.target
    static = LayerNormKernels(kernels.driver, backend=target.backend, chip=target.chip, cache_dir=cache_dir, static_shapes=True)
    skip_unsupported(static, dtype)
    dy, x, gamma, _ = random_problem(rng, shape, dtype)
    rstd = rmsnorm_forward_reference(x, gamma, EPS)[1].astype(np.float32)
    check_backward(static, dtype, dy, x, gamma, rstd)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("shape", [(48, 256), (3, 1, 40), (4096, 64), (7, 33)], ids=lambda s: "x".join(map(str, s)))
def test_static_shape_artifacts(rng, cache_dir, dtype, shape):
    """The shape-specialised artifacts (static M and N) on the CPU: dgamma from
    blocked column partials where M splits into blocks (48 = 3 x 16, 3 = 3 x 1,
    4096 = 64 x 64), one reduction where it does not (7)."""
    kernels = LayerNormKernels("local-task", cache_dir=cache_dir, static_shapes=True)
    dy, x, gamma, _ = random_problem(rng, shape, dtype)
    y, rstd = host(kernels.rmsnorm_forward(x, gamma, eps=EPS))
    assert_close("y", y, rmsnorm_forward_reference(x, gamma, EPS)[0], TOLERANCE[dtype])
    poisoned = tuple(kernels.to_device(np.full(s, np.nan, DTYPES[dtype])) for s in (shape, shape[-1:]))
    got = host(kernels.rmsnorm_backward(dy, x, gamma, rstd, out=poisoned))
    for name, g, w in zip(("dx", "dgamma"), got, rmsnorm_backward_reference(dy, x, gamma, rstd)):
        assert_close(name, g, w, TOLERANCE[dtype], float(np.linalg.norm(w)))


@pytest.mark.parametrize("pair", list(itertools.combinations(BACKENDS, 2)), ids=lambda p: "-vs-".join(map(backend_id, p)))
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_backends_agree(pair, dtype, rng, cache_dir):
    dy, x, gamma, _ = random_problem(rng, (37, 300), dtype)
    results = []
    for backend in pair:
        # Skipped only for no device or no compiler for a missing artifact; f32 and bf16 run everywhere.
        kernels = open_kernels(backend, cache_dir)
        with skip_missing_artifact(backend):
            y, rstd = kernels.rmsnorm_forward(x, gamma, eps=EPS)
            results.append(host((y, rstd, *kernels.rmsnorm_backward(dy, x, gamma, eps=EPS))))
    for name, a, b in zip(("y", "rstd", "dx", "dgamma"), *results):
        assert relative_error(a, b) < 2 * TOLERANCE[dtype], name


def test_numpy_api(rng):
    dy, x, gamma, _ = random_problem(rng, (4, 2, 40), "f32")
    y, rstd = rmsnorm_forward(x, gamma, eps=1e-6)
    assert relative_error(y, rmsnorm_forward_reference(x, gamma, 1e-6)[0]) < TOLERANCE["f32"]
    dx, dgamma = rmsnorm_backward(dy, x, gamma, rstd, eps=1e-6)
    dx_want, dgamma_want = rmsnorm_backward_reference(dy, x, gamma, rstd)
    assert relative_error(dx, dx_want) < TOLERANCE["f32"] and relative_error(dgamma, dgamma_want) < TOLERANCE["f32"]


def test_bad_inputs(rng):
    kernels = LayerNormKernels("local-task")
    dy, x, gamma, _ = random_problem(rng, (4, 8), "f32")
    rstd = np.ones(4, np.float32)
    with pytest.raises(ValueError, match=r"gamma must have shape \(8,\)"):
        kernels.rmsnorm_forward(x, gamma[:5], eps=EPS)
    with pytest.raises(ValueError, match=r"rstd must have shape \(4,\)"):
        kernels.rmsnorm_backward(dy, x, gamma, rstd[:3], eps=EPS)
    with pytest.raises(TypeError, match="rstd must be float32"):
        kernels.rmsnorm_backward(dy, x, gamma, rstd.astype(np.float64), eps=EPS)
    with pytest.raises(ValueError, match=r"x has shape \(4, 7\) but dy has \(4, 8\)"):
        kernels.rmsnorm_backward(dy, x[:, :7], gamma, eps=EPS)
    with pytest.raises(ValueError, match="N == 0"):
        kernels.rmsnorm_forward(x[:, :0], gamma[:0], eps=EPS)
    with pytest.raises(ValueError, match="eps must be"):
        kernels.rmsnorm_forward(x, gamma, eps=-1.0)
    with pytest.raises(ValueError, match="eps must be"):
        kernels.rmsnorm_backward(dy, x, gamma, rstd, eps=float("nan"))
    with pytest.raises(TypeError, match="eps"):
        kernels.rmsnorm_forward(x, gamma)  # no default: torch's depends on the dtype
    dx = kernels.to_device(np.zeros((4, 8), np.float32))
    with pytest.raises(ValueError, match="out dgamma shares memory with out dx"):
        kernels.rmsnorm_backward(dy, x, gamma, eps=EPS, out=(dx, dx))


@pytest.mark.parametrize("stats", [True, False], ids=["saved", "recompute"])
def test_empty_batch(stats):
    """torch's convention: empty dX, zero dgamma, written into given outputs."""
    kernels = LayerNormKernels("local-task")
    x = np.zeros((0, 8), np.float32)
    gamma = np.ones(8, np.float32)
    y, rstd = host(kernels.rmsnorm_forward(x, gamma, eps=EPS))
    assert y.shape == (0, 8) and rstd.shape == (0,)
    dgamma = kernels.to_device(np.full(8, np.nan, np.float32))
    dx, got = kernels.rmsnorm_backward(x, x, gamma, *((rstd,) if stats else ()), eps=0.0, out=(None, dgamma))
    assert got is dgamma and np.asarray(dx.to_host()).shape == (0, 8)
    assert (np.asarray(dgamma.to_host()) == 0).all()


@pytest.mark.parametrize("chip", ["sm_80", "gfx942", "gfx1100"])
def test_gpu_design_uses_layernorm_row_schedules(chip):
    """Static N on GPUs: the forward's row reduction and Y carry hand-set
    schedules; so does the backward's two-pass row dispatch where rows are
    too long for one pass (16384 > 512 lanes x 16); dynamic N and CPUs leave
    them to IREE. tests/test_schedules.py covers the one-pass backward."""
    target = target_for("cuda" if chip.startswith("sm") else "hip", chip)
    forward = Specialization(RMSNORM_FORWARD, "bf16", None, 4096).source(target)
    assert forward.count("lowering_config") >= 2 and "VectorDistribute" in forward
    backward = Specialization(RMSNORM_BACKWARD, "f32", 4096, 16384)
    assert "VectorDistribute" in backward.source(target) and "flow.dispatch.region" not in backward.source(target)
    assert "util.optimization_barrier %rstd_fused" in backward.source(target)
    assert backward.transform_library(target) == ""
    # dgamma from blocked partials of one sum (static M), with LayerNorm's partial schedule.
    assert "%dgamma_parts = linalg.generic" in backward.source(target)
    assert "workgroup = [1, 512, 0], thread = [0, 4, 0], reduction = [0, 0, 8]" in backward.source(target)
    for spec, where in ((Specialization(RMSNORM_BACKWARD, "f32"), target), (backward, LLVM_CPU_HOST)):
        assert "#iree_gpu" not in spec.source(where)
        assert "tensor.cast %rstd_fused" in spec.source(where)


def test_op_declares_every_entry():
    """Each entry's argument roles match its template's function signature."""
    for kernel in rmsnorm.KERNELS:
        source = Specialization(kernel, "f32").source(LLVM_CPU_HOST)
        for entry in kernel.entries:
            signature = source[source.index(f"func.func @{entry.name}("):].split(") ->")[0]
            names = [a.name for a in entry.inputs] + list(entry.scalars) + [a.name for a in entry.outputs]
            found = [part.split(":")[0].strip().lstrip("%").removesuffix("_arg").removesuffix("_storage")
                     for part in signature.split("(", 1)[1].split(",") if part.strip().startswith("%")]
            assert found[: len(names)] == names, (entry.name, found)


def test_kernel_declarations_are_checked():
    """An entry with column outputs must say which entry writes them for an empty batch."""
    from lnbwd_iree.specialization import Arg, Entry, Kernel, Role

    entry = Entry("f", (Arg("x", Role.ROWS),), (Arg("dgamma", Role.COLUMNS),), ("eps",), "f")
    with pytest.raises(ValueError, match="zero_columns_from must name an entry of k without scalars"):
        Kernel("k", (entry,), lambda spec, target: {})


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_one_pass_keeps_the_partials_in_registers(dtype, tmp_path, iree_compiler):
    """The one-pass dispatch's PTX loads gamma once and each row's dY and X
    once (16-byte vectors; the read-only .nc path), never loads the
    partials, and stores them once, after the row loop: they stay in
    registers across it. (Without the pipeline's forall-to-for they are
    zeroed in memory first and stored at every row step.)"""
    import re

    from lnbwd_iree import compiler
    from lnbwd_iree.ops import schedules

    target = target_for("cuda", "sm_80")
    spec = Specialization(RMSNORM_BACKWARD, dtype, 8192, 4096)
    _, _, subgroups = schedules.row_blocks(spec, target)
    compiler.compile_spec(spec, target, [f"--iree-hal-dump-executable-files-to={tmp_path}"])
    (ptx,) = tmp_path.glob("*.ptx")
    text = ptx.read_text()
    entry = text[text.index(".entry rmsnorm_backward_dispatch_0_reduction_256x1x4096x32"):]
    entry = entry[: entry.index("\n}\n")]
    per_tensor = 4096 // (32 * subgroups * spec.vector)  # 16-byte vectors of a row per lane
    assert entry.count("ld.global.nc.v4") == 3 * per_tensor  # gamma, then dY and X in the loop
    assert re.findall(r"ld\.global\.(?!nc)", entry) == []
    # dX's vectors of a row, then the lane's fp32 partials (one per element it holds of a row).
    assert entry.count("st.global.v4") == per_tensor + per_tensor * spec.vector // 4
    tail = entry[entry.rindex("bra") :]  # after the loop's last branch
    assert tail.count("st.global.v4") == per_tensor * spec.vector // 4


@pytest.mark.parametrize(
    "dtype, shape",
    [("f32", (8192, 4096)), ("bf16", (16384, 8192)), ("bf16", (4096, 16384)), ("f16", (65536, 768))],
    ids=str,
)
def test_gfx942_backward_does_not_spill(dtype, shape, iree_compiler):
    """One pass (8192x4096, 16384x8192) and two passes (rows of 16384; 768
    bf16/f16 columns do not fill wave64 steps) on MI300X: no spills, no scratch."""
    from lnbwd_iree.rocm_report import kernel_resources

    target = Target("rocm", "gfx942", ("hip",))
    spec = Specialization(RMSNORM_BACKWARD, dtype, *shape)
    kernels = kernel_resources(spec, target)
    assert kernels, "no kernels in the dumped assembly"
    for k in kernels:
        assert not k.spills, f"{k.name}: {k.vgpr_spill_count} VGPR / {k.sgpr_spill_count} SGPR spills, scratch {k.private_segment_fixed_size} B"
