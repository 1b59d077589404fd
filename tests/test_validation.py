"""Bad input raises an exception that names the problem."""

import ml_dtypes
import numpy as np
import pytest

from lnbwd_iree import LayerNormKernels, layernorm_backward, layernorm_forward
from lnbwd_iree.reference import TOLERANCE, forward_reference, relative_error


@pytest.fixture(scope="module")
def cpu(tmp_path_factory):
    return LayerNormKernels("local-task", cache_dir=tmp_path_factory.mktemp("cache"))


def arrays(m=4, n=8, dtype=np.float32):
    rng = np.random.default_rng(1)
    return rng.standard_normal((m, n)).astype(dtype), rng.standard_normal((m, n)).astype(dtype), np.ones(n, dtype)


def test_mismatched_shapes(cpu):
    dy, x, gamma = arrays()
    with pytest.raises(ValueError, match=r"x has shape \(4, 9\) but dy has \(4, 8\)"):
        cpu.backward(dy, np.zeros((4, 9), np.float32), gamma)
    with pytest.raises(ValueError, match=r"gamma must have shape \(8,\)"):
        cpu.backward(dy, x, np.ones(7, np.float32))
    with pytest.raises(ValueError, match=r"mean must have shape \(4,\)"):
        cpu.backward(dy, x, gamma, np.zeros(5, np.float32), np.ones(4, np.float32))


def test_wrong_rank(cpu):
    _, _, gamma = arrays()
    with pytest.raises(ValueError, match="at least 1 dim"):
        cpu.forward(np.ones((), np.float32), gamma, gamma)


def test_unsupported_and_mixed_dtypes(cpu):
    dy, x, gamma = arrays()
    with pytest.raises(TypeError, match="dtype int32"):
        cpu.backward(dy.astype(np.int32), x.astype(np.int32), gamma.astype(np.int32))
    with pytest.raises(TypeError, match="x has dtype float16 but dy has float32"):
        cpu.backward(dy, x.astype(np.float16), gamma)
    with pytest.raises(TypeError, match="gamma has dtype bfloat16"):
        cpu.backward(dy, x, gamma.astype(ml_dtypes.bfloat16))
    with pytest.raises(TypeError, match="mean must be float32"):
        cpu.backward(dy, x, gamma, np.zeros(4, np.float16), np.ones(4, np.float32))


def test_stats_come_in_pairs(cpu):
    dy, x, gamma = arrays()
    with pytest.raises(ValueError, match="both mean and rstd"):
        cpu.backward(dy, x, gamma, np.zeros(4, np.float32))


def test_empty_rows(cpu):
    with pytest.raises(ValueError, match="N == 0"):
        cpu.forward(np.ones((3, 0), np.float32), np.ones(0, np.float32), np.ones(0, np.float32))


def test_bad_eps(cpu):
    dy, x, gamma = arrays()
    with pytest.raises(ValueError, match="eps must be"):
        cpu.backward(dy, x, gamma, eps=-1.0)
    with pytest.raises(ValueError, match="eps must be"):
        layernorm_forward(x, gamma, gamma, eps=float("nan"))


NOT_NUMBERS = ["1e-5", None, True, np.array([1e-5]), 1e-5j]


@pytest.mark.parametrize("eps", NOT_NUMBERS, ids=repr)
def test_eps_that_is_not_a_number_is_refused_by_name(cpu, eps):
    dy, x, gamma = arrays()
    mean, rstd = np.zeros(4, np.float32), np.ones(4, np.float32)
    calls = {
        "forward": lambda: cpu.forward(x, gamma, gamma, eps=eps),
        "backward": lambda: cpu.backward(dy, x, gamma, eps=eps),
        "backward from statistics": lambda: cpu.backward(dy, x, gamma, mean, rstd, eps=eps),
        "rmsnorm_forward": lambda: cpu.rmsnorm_forward(x, gamma, eps=eps),
        "api": lambda: layernorm_forward(x, gamma, gamma, eps=eps),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match=f"eps must be a real number .int or float., got {type(eps).__name__}"):
            call()
            pytest.fail(f"{name} took eps={eps!r}")


@pytest.mark.parametrize("eps", [1, np.float32(0.25), np.float64(1e-3), np.int64(2), 1e-5], ids=repr)
def test_eps_of_any_real_type_is_used(cpu, eps, rng):
    x = rng.standard_normal((3, 16)).astype(np.float32)
    gamma, beta = (1 + 0.5 * rng.standard_normal(16)).astype(np.float32), rng.standard_normal(16).astype(np.float32)
    got = cpu.forward(x, gamma, beta, eps=eps)
    for g, want in zip(got, forward_reference(x, gamma, beta, eps=float(eps))):
        assert relative_error(g.to_host(), want) < TOLERANCE["f32"]


def test_unknown_device():
    dy, x, gamma = arrays()
    with pytest.raises(ValueError, match="unknown device driver .tpu."):
        layernorm_backward(dy, x, gamma, device="tpu")


def test_driver_without_device():
    """hip is built into the runtime; where no AMD GPU (or ROCm) exists it must say so."""
    try:
        LayerNormKernels("hip")
    except RuntimeError as e:
        assert "hip" in str(e)
    else:
        pytest.skip("this machine has a hip device")


def test_backend_driver_mismatch():
    with pytest.raises(ValueError, match="runs on local-task or local-sync"):
        LayerNormKernels("cuda", backend="vmvx")


def test_vmvx_refuses_f16_by_name():
    kernels = LayerNormKernels("local-task", backend="vmvx")
    dy, x, gamma = arrays(dtype=np.float16)
    with pytest.raises(TypeError, match="f16 is not supported on vmvx-generic"):
        kernels.backward(dy, x, gamma)


def test_bad_out_buffer(cpu):
    dy, x, gamma = arrays()
    with pytest.raises(TypeError, match="out dx must be a device array"):
        cpu.backward(dy, x, gamma, out=np.empty_like(x))
    with pytest.raises(ValueError, match=r"out dx must have shape \(4, 8\) and dtype float32"):
        cpu.backward(dy, x, gamma, out=cpu.allocate((4, 8), np.float16))


def test_f64_is_for_cpus():
    from lnbwd_iree.targets import Target

    with pytest.raises(TypeError, match="f64 is not supported on cuda-sm_80"):
        Target("cuda", "sm_80", ("cuda",)).check_dtype("f64")


@pytest.mark.parametrize(
    "device, threads, match",
    [("cuda", 1, "local-task and local-sync"), ("local-task", 0, "positive int"), ("local-task", 1.5, "positive int")],
)
def test_bench_threads_are_checked(device, threads, match):
    from lnbwd_iree import bench

    with pytest.raises(ValueError, match=match):
        bench.limit_cpu_threads(device, threads)
