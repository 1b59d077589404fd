"""Forward and backward on every available backend against the float64 reference."""

import numpy as np
import pytest
from conftest import DTYPES, TOLERANCE, assert_close, host, random_problem, skip_unsupported, sum_scales

from lnbwd_iree import LayerNormKernels
from lnbwd_iree.runtime import STATS_DTYPES
from lnbwd_iree.reference import backward_reference, forward_reference

# Odd sizes on purpose: single rows and columns, N not a multiple of 4 or 64.
SHAPES = [(1, 64), (17, 1), (5, 760), (64, 1000), (33, 4096), (2, 3, 96)]


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_backward_with_saved_stats(kernels, rng, dtype, shape):
    skip_unsupported(kernels, dtype)
    dy, x, gamma, beta = random_problem(rng, shape, dtype)
    _, mean, rstd = forward_reference(x, gamma, beta)
    mean, rstd = mean.astype(STATS_DTYPES[dtype]), rstd.astype(STATS_DTYPES[dtype])
    want = backward_reference(dy, x, gamma, mean, rstd)
    # Results land in NaN-poisoned buffers: an element the kernel skips stays NaN.
    poisoned = [kernels.to_device(np.full(s, np.nan, DTYPES[dtype])) for s in (shape, shape[-1:], shape[-1:])]
    got = host(kernels.backward(dy, x, gamma, mean, rstd, out=tuple(poisoned)))
    for name, array in zip(("dx", "dgamma", "dbeta"), poisoned):
        assert np.isfinite(np.asarray(array.to_host(), np.float64)).all(), f"{name} has unwritten elements"
    for name, g, w, scale in zip(("dx", "dgamma", "dbeta"), got, want, sum_scales(dy, x, gamma, mean, rstd)):
        assert g.dtype == DTYPES[dtype]
        assert_close(name, g, w, TOLERANCE[dtype], scale)


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("shape", [(9, 130), (2, 5, 64)], ids=lambda s: "x".join(map(str, s)))
def test_forward_then_backward_recompute(kernels, rng, dtype, shape):
    skip_unsupported(kernels, dtype)
    dy, x, gamma, beta = random_problem(rng, shape, dtype)
    y_want, mean_want, rstd_want = forward_reference(x, gamma, beta, eps=1e-5)
    poisoned = kernels.to_device(np.full(shape, np.nan, DTYPES[dtype]))
    y, mean, rstd = host(kernels.forward(x, gamma, beta, eps=1e-5, out=poisoned))
    assert np.isfinite(np.asarray(poisoned.to_host(), np.float64)).all(), "y has unwritten elements"
    assert mean.dtype == rstd.dtype == STATS_DTYPES[dtype] and mean.shape == shape[:-1]
    assert_close("y", y, y_want, TOLERANCE[dtype])
    assert_close("mean", mean, mean_want, 1e-5)
    assert_close("rstd", rstd, rstd_want, 1e-5)

    want = backward_reference(dy, x, gamma, mean_want, rstd_want)
    for stats in ((mean, rstd), (None, None)):
        got = host(kernels.backward(dy, x, gamma, *stats, eps=1e-5))
        for name, g, w in zip(("dx", "dgamma", "dbeta"), got, want):
            assert_close(name, g, w, TOLERANCE[dtype])


def test_large_common_offset_stays_accurate_in_f32(kernels, rng):
    """x = 1e4 + noise (std 2). The f32 mean itself is off by up to half an ulp
    of 1e4 (4.9e-4), which moves x_hat by ~2.4e-4 of its size: 5e-4 is what f32
    statistics allow. A one-pass E[x^2] - E[x]^2 variance would be off by ~100%,
    and an unshifted f32 row sum for the mean measured 1.4e-3 here."""
    dy, x, gamma, beta = random_problem(rng, (16, 512), "f32", offset=1e4)
    _, mean_want, rstd_want = forward_reference(x, gamma, beta)
    _, mean, rstd = host(kernels.forward(x, gamma, beta))
    assert_close("rstd", rstd, rstd_want, 1e-4)
    want = backward_reference(dy, x, gamma, mean_want, rstd_want)
    for got, w in zip(host(kernels.backward(dy, x, gamma)), want):
        assert_close("recomputed", got, w, 5e-4)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_nan_and_inf_propagate(kernels, rng):
    dy, x, gamma, beta = random_problem(rng, (6, 40), "f32")
    x[2, 7] = np.nan
    dy[4, 3] = np.inf
    _, mean, rstd = forward_reference(x, gamma, beta)
    want = backward_reference(dy, x, gamma, mean.astype(np.float32), rstd.astype(np.float32))
    got = host(kernels.backward(dy, x, gamma, mean.astype(np.float32), rstd.astype(np.float32)))
    # Which non-finite value (NaN or +-Inf) an Inf-contaminated row yields
    # depends on the order of operations; what must match the reference is
    # which outputs are contaminated, and the values of all the others.
    for name, g, w in zip(("dx", "dgamma", "dbeta"), got, want):
        np.testing.assert_array_equal(np.isfinite(g), np.isfinite(w), err_msg=f"{name}: non-finite pattern")
        finite = np.isfinite(w)
        assert finite.any() or name != "dx"
        assert_close(name, g[finite], w[finite], 1e-5)


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_empty_batch(kernels, dtype):
    skip_unsupported(kernels, dtype)
    n = 12
    x = np.ones((0, n), DTYPES[dtype])
    gamma = np.linspace(0.5, 1.5, n).astype(DTYPES[dtype])
    dx, dgamma, dbeta = host(kernels.backward(x, x, gamma, np.ones(0, STATS_DTYPES[dtype]), np.ones(0, STATS_DTYPES[dtype])))
    assert dx.shape == (0, n)
    np.testing.assert_array_equal(dgamma, np.zeros(n))
    np.testing.assert_array_equal(dbeta, np.zeros(n))


def test_device_arrays_chain_without_host_round_trip(kernels, rng):
    """Device outputs of the forward feed the backward directly."""
    dy, x, gamma, beta = random_problem(rng, (4, 6, 48), "f32")
    x_dev, gamma_dev, dy_dev = kernels.to_device(x), kernels.to_device(gamma), kernels.to_device(dy)
    _, mean, rstd = kernels.forward(x_dev, gamma_dev, kernels.to_device(beta))
    got = host(kernels.backward(dy_dev, x_dev, gamma_dev, mean, rstd))
    _, mean_want, rstd_want = forward_reference(x, gamma, beta)
    for name, g, w in zip(("dx", "dgamma", "dbeta"), got, backward_reference(dy, x, gamma, mean_want, rstd_want)):
        assert_close(name, g, w, 1e-5)


def check_static_artifact(kernels, rng, dtype, shape, cache_dir):
    """Runs the artifact specialised to ``shape`` with all three outputs
    poisoned (NaN) first, against the float64 reference."""
    target = kernels.target
    static = LayerNormKernels(
        kernels.driver, backend=target.backend, chip=target.chip, cache_dir=cache_dir, static_shapes=True
    )
    skip_unsupported(static, dtype)
    dy, x, gamma, beta = random_problem(rng, shape, dtype)
    _, mean, rstd = forward_reference(x, gamma, beta)
    mean, rstd = mean.astype(np.float32), rstd.astype(np.float32)
    want = backward_reference(dy, x, gamma, mean, rstd)
    out = tuple(static.to_device(np.full(s, np.nan, DTYPES[dtype])) for s in (shape, shape[-1:], shape[-1:]))
    got = host(static.backward(dy, x, gamma, mean, rstd, out=out))
    for name, g, w, scale in zip(("dx", "dgamma", "dbeta"), got, want, sum_scales(dy, x, gamma, mean, rstd)):
        assert np.isfinite(np.asarray(g, np.float64)).all(), f"{name} has unwritten elements"
        assert_close(name, g, w, TOLERANCE[dtype], scale)


@pytest.mark.parametrize("dtype", ["f32", "bf16"])
@pytest.mark.parametrize("shape", [(1024, 512), (96, 1000), (1, 64)], ids=lambda s: "x".join(map(str, s)))
def test_static_shape_artifacts(kernels, rng, dtype, shape, cache_dir):
    """Shape-specialised artifacts: blocked column sums on CPUs, one pass on
    GPUs (1024x512), two passes where N fits no GPU step (96x1000, 1x64)."""
    check_static_artifact(kernels, rng, dtype, shape, cache_dir)


@pytest.mark.parametrize(
    "dtype, shape",
    [("f32", (8192, 4096)), ("f32", (32768, 1024)), ("f32", (65536, 768)), ("f32", (16384, 8192)),
     ("bf16", (8192, 4096)), ("bf16", (32768, 1024)), ("bf16", (65536, 768)), ("bf16", (16384, 8192)),
     ("f16", (8192, 4096)), ("f16", (32768, 1024))],
    ids=str,
)
def test_one_pass_artifacts(kernels, rng, dtype, shape, cache_dir):
    """The shipped one-pass GPU artifacts of the large benchmark shapes."""
    if not kernels.target.is_gpu:
        pytest.skip("the one-pass design is built for GPU targets only")
    check_static_artifact(kernels, rng, dtype, shape, cache_dir)


def check_static_forward(kernels, rng, dtype, shape, cache_dir, offset=0.0, tolerances=None):
    """Runs the shape-specialised forward (per N: it serves any M) with all
    three outputs poisoned (NaN) first, against the float64 reference."""
    target = kernels.target
    static = LayerNormKernels(
        kernels.driver, backend=target.backend, chip=target.chip, cache_dir=cache_dir, static_shapes=True
    )
    skip_unsupported(static, dtype)
    _, x, gamma, beta = random_problem(rng, shape, dtype, offset=offset)
    want = forward_reference(x, gamma, beta)
    stats = STATS_DTYPES[dtype]
    out = tuple(
        static.to_device(np.full(s, np.nan, d)) for s, d in ((shape, DTYPES[dtype]), (shape[:-1], stats), (shape[:-1], stats))
    )
    got = host(static.forward(x, gamma, beta, out=out))
    for name, g, w, tol in zip(("y", "mean", "rstd"), got, want, tolerances or (TOLERANCE[dtype], 1e-5, 1e-5)):
        assert np.isfinite(np.asarray(g, np.float64)).all(), f"{name} has unwritten elements"
        assert_close(name, g, w, tol)


@pytest.mark.parametrize(
    "dtype, shape",
    [("f32", (1024, 512)), ("bf16", (1024, 512)), ("f32", (96, 1000)), ("bf16", (3, 7, 768))],
    ids=str,
)
def test_static_forward_artifacts(kernels, rng, dtype, shape, cache_dir):
    """Per-N forward artifacts: the hand-set schedule on GPUs where N fills
    whole subgroup steps (512, 768), IREE's choice elsewhere (N = 1000, CPUs)."""
    check_static_forward(kernels, rng, dtype, shape, cache_dir)


@pytest.mark.parametrize(
    "dtype, shape",
    [(dtype, shape) for dtype in ("f32", "bf16")
     for shape in ((8192, 4096), (32768, 1024), (16384, 8192), (4096, 16384), (65536, 768), (8, 65536))],
    ids=str,
)
def test_forward_row_in_registers_artifacts(kernels, rng, dtype, shape, cache_dir):
    """The shipped GPU forward schedules of the large benchmark shapes, and a
    row too long to hold in registers (f32 N = 65536 walks it in steps)."""
    if not kernels.target.is_gpu:
        pytest.skip("the forward schedule is set for GPU targets only")
    check_static_forward(kernels, rng, dtype, shape, cache_dir)


def test_static_forward_on_a_large_common_offset(kernels, rng, cache_dir):
    """The per-N forward keeps the pivot-shifted mean and the centred variance
    (bounds as in test_large_common_offset_stays_accurate_in_f32)."""
    check_static_forward(kernels, rng, "f32", (64, 4096), cache_dir, offset=1e4, tolerances=(5e-4, 1e-5, 1e-4))


def test_repeated_calls_on_device_arrays(kernels, rng):
    """Calls that repeat a signature skip validation: each must still see its
    own inputs, eps and outputs, with batch dims viewed as rows, whether the
    outputs are given or allocated."""
    shape = (3, 5, 96)
    for round_, eps in enumerate((1e-5, 1e-5, 0.5, 1e-5)):
        dy, x, gamma, beta = random_problem(rng, shape, "f32")
        dy_dev, x_dev, gamma_dev = (kernels.to_device(a) for a in (dy, x, gamma))
        poisoned = tuple(kernels.to_device(np.full(s, np.nan, np.float32)) for s in (shape, shape[-1:], shape[-1:]))
        results = kernels.backward(dy_dev, x_dev, gamma_dev, eps=eps, out=poisoned if round_ % 2 else None)
        if round_ % 2:
            assert all(r is p for r, p in zip(results, poisoned))
        got = host(results)
        _, mean, rstd = forward_reference(x, gamma, beta, eps=eps)
        for name, g, w in zip(("dx", "dgamma", "dbeta"), got, backward_reference(dy, x, gamma, mean, rstd)):
            assert_close(name, g, w, TOLERANCE["f32"])


def test_checks_hold_after_a_signature_is_cached(kernels):
    """A validated signature is remembered; a call that differs from it in any
    array's shape or dtype is validated again, and a bad eps is caught on every call."""
    rng = np.random.default_rng(1)
    dy, x = (kernels.to_device(rng.standard_normal((4, 8)).astype(np.float32)) for _ in range(2))
    gamma = kernels.to_device(np.ones(8, np.float32))
    out = tuple(kernels.allocate(s, np.float32) for s in ((4, 8), (8,), (8,)))
    kernels.backward(dy, x, gamma, out=out)
    with pytest.raises(ValueError, match=r"out dgamma must have shape \(8,\) and dtype float32"):
        kernels.backward(dy, x, gamma, out=(out[0], kernels.allocate((8,), np.float16), out[2]))
    with pytest.raises(ValueError, match=r"x has shape \(4, 9\) but dy has \(4, 8\)"):
        kernels.backward(dy, kernels.to_device(np.zeros((4, 9), np.float32)), gamma, out=out)
    with pytest.raises(ValueError, match="eps must be"):
        kernels.backward(dy, x, gamma, out=out, eps=-1.0)
