import contextlib
import os
import shutil
import tempfile

import numpy as np
import pytest

from lnbwd_iree import LayerNormKernels, cache, compiler
from lnbwd_iree.cache import ArtifactNotFoundError
from lnbwd_iree.dtypes import STORAGE_DTYPES
from lnbwd_iree.reference import TOLERANCE, relative_error  # noqa: F401  (TOLERANCE: for the test modules)
from lnbwd_iree.runtime import open_device

# (driver, backend) pairs; GPU ones are skipped where no such device exists.
# LNBWD_IREE_TEST_DEVICES (comma-separated drivers) narrows the list, e.g. to
# "cuda" on a GPU machine that has precompiled artifacts but no compiler, and
# makes the devices it names required: one that does not open is an error.
BACKENDS = [
    ("local-task", "llvm-cpu"),
    ("local-task", "vmvx"),
    ("local-sync", "llvm-cpu"),
    ("cuda", None),
    ("hip", None),
    ("vulkan", None),
]
DEVICES_ENV = "LNBWD_IREE_TEST_DEVICES"
NAMED_DEVICES = tuple(d for d in os.environ.get(DEVICES_ENV, "").split(",") if d)
if NAMED_DEVICES:
    BACKENDS = [b for b in BACKENDS if b[0] in NAMED_DEVICES]

# Storage dtype name -> NumPy dtype, from the one dtype table.
DTYPES = STORAGE_DTYPES

_kernels: dict = {}


def backend_id(backend) -> str:
    """llvm-cpu / vmvx on local-task, else the driver's name."""
    driver, name = backend
    return name if driver == "local-task" else driver


_session_cache = None


def pytest_configure(config):
    """Every default-cache use of the session (kernels_for, lnbwd_iree.torch,
    the CLI, subprocesses) goes to a fresh temporary cache, never the user's,
    unless LNBWD_IREE_CACHE names one: set before any test module is imported."""
    global _session_cache
    if not os.environ.get(cache.CACHE_ENV):
        _session_cache = tempfile.mkdtemp(prefix="lnbwd-iree-test-cache-")
        os.environ[cache.CACHE_ENV] = _session_cache


def pytest_unconfigure(config):
    if _session_cache is not None:
        shutil.rmtree(_session_cache, ignore_errors=True)


@pytest.fixture(scope="session")
def cache_dir():
    """The session's artifact cache (see pytest_configure)."""
    return os.environ[cache.CACHE_ENV]


def open_kernels(backend, cache_dir, **options) -> LayerNormKernels:
    """``LayerNormKernels`` on ``backend`` (driver, IREE backend), or a skip
    where this machine has no such device; a device LNBWD_IREE_TEST_DEVICES
    names fails the test instead. Only opening the device is caught: errors
    of the kernels themselves propagate."""
    driver, name = backend
    try:
        device = open_device(driver)
    except RuntimeError as e:
        if driver in NAMED_DEVICES:
            pytest.fail(f"{driver} is named in {DEVICES_ENV} but does not open: {e}")
        pytest.skip(f"{driver}: {e}")
    return LayerNormKernels(driver, backend=name, cache_dir=cache_dir, hal_device=device, **options)


@contextlib.contextmanager
def skip_missing_artifact(backend):
    """Skips where an artifact is missing and no compiler is installed to
    build it (the GPU machine runs the suite with the runtime alone)."""
    try:
        yield
    except ArtifactNotFoundError as e:
        pytest.skip(f"{backend_id(backend)}: {e}")


@pytest.fixture(params=BACKENDS, ids=backend_id)
def kernels(request, cache_dir) -> LayerNormKernels:
    if request.param not in _kernels:
        # The dynamic-shape artifact; test_static_shape_artifacts covers the specialised ones.
        _kernels[request.param] = open_kernels(request.param, cache_dir, static_shapes=False)
    return _kernels[request.param]


def skip_unsupported(kernels, dtype):
    """vmvx has no f16; the runtime must refuse it by name rather than fail late."""
    try:
        kernels.target.check_dtype(dtype)
    except TypeError as e:
        assert dtype in str(e) and kernels.target.name in str(e)
        pytest.skip(str(e))


def random_problem(rng, shape, dtype, offset=0.0):
    """Fresh inputs, rounded to ``dtype``: dy, x, gamma, beta."""
    n = shape[-1]
    cast = DTYPES[dtype]
    dy = rng.standard_normal(shape).astype(cast)
    x = (offset + rng.standard_normal(shape) * 2.0 + 0.5).astype(cast)
    gamma = (1.0 + 0.5 * rng.standard_normal(n)).astype(cast)
    beta = rng.standard_normal(n).astype(cast)
    return dy, x, gamma, beta


@pytest.fixture
def rng():
    # Fresh inputs every run; the seed is printed on failure for reproduction.
    seed = int(np.random.SeedSequence().entropy % 2**32)
    print(f"seed={seed}")
    return np.random.default_rng(seed)


@pytest.fixture
def iree_compiler():
    """For tests that compile: skipped where iree-base-compiler is absent (the
    GPU machine runs the suite with the runtime alone)."""
    if compiler.compiler_version() is None:
        pytest.skip("iree-base-compiler is not installed")


def host(results):
    return [np.asarray(r.to_host()) for r in results]


def assert_close(name, got, want, tol, scale=0.0):
    """Norm-wise relative error below ``tol``. ``scale``: the norm of the terms
    that cancel into ``want`` (for dX, ||rstd * gamma * dY||), so a result that
    is exactly 0 in real arithmetic, as dX is for N == 1, is judged against the
    size of what was rounded rather than against 0."""
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    got64, want64 = np.asarray(got, np.float64), np.asarray(want, np.float64)
    denom = max(np.linalg.norm(want64), scale)
    error = np.linalg.norm(got64 - want64) / denom if denom > 0 else relative_error(got, want)
    assert error < tol, f"{name}: relative error {error:.3g} >= {tol:.3g}"


def dx_scale(dy, gamma, rstd):
    return float(np.linalg.norm(np.asarray(dy, np.float64) * np.asarray(gamma, np.float64) * rstd[..., None]))


def sum_scales(dy, x, gamma, mean, rstd):
    """Scales for (dX, dgamma, dbeta): for the column sums, the norm of the
    sums of absolute terms, which bounds f32 summation error when the terms
    cancel (a 17-row dbeta can be near 0 with terms of size 1)."""
    dy64 = np.asarray(dy, np.float64)
    x_hat = (np.asarray(x, np.float64) - mean[..., None]) * rstd[..., None]
    rows = tuple(range(dy64.ndim - 1))
    return (
        dx_scale(dy, gamma, rstd),
        float(np.linalg.norm(np.abs(dy64 * x_hat).sum(axis=rows))),
        float(np.linalg.norm(np.abs(dy64).sum(axis=rows))),
    )


def bench_args(tmp_path, *extra, name="out.json"):
    # A small L2 keeps the rotation a few sets of these tiny inputs.
    return ["bench", "--shape", "16x24", "--dtype", "f32", "--l2-bytes", "4096", "--json", str(tmp_path / name), *extra]
