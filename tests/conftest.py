import os
import shutil
import tempfile

import numpy as np
import pytest

from lnbwd_iree import LayerNormKernels, cache, compiler
from lnbwd_iree.dtypes import STORAGE_DTYPES
from lnbwd_iree.reference import TOLERANCE  # noqa: F401  (error bounds per dtype, for the test modules)

# (driver, backend) pairs; GPU ones are skipped where no such device exists.
# LNBWD_IREE_TEST_DEVICES (comma-separated drivers) narrows the list, e.g. to
# "cuda" on a GPU machine that has precompiled artifacts but no compiler.
BACKENDS = [
    ("local-task", "llvm-cpu"),
    ("local-task", "vmvx"),
    ("local-sync", "llvm-cpu"),
    ("cuda", None),
    ("hip", None),
    ("vulkan", None),
]
if os.environ.get("LNBWD_IREE_TEST_DEVICES"):
    wanted = os.environ["LNBWD_IREE_TEST_DEVICES"].split(",")
    BACKENDS = [b for b in BACKENDS if b[0] in wanted]

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


@pytest.fixture(params=BACKENDS, ids=backend_id)
def kernels(request, cache_dir) -> LayerNormKernels:
    driver, backend = request.param
    if request.param not in _kernels:
        try:
            # The dynamic-shape artifact; test_static_shape_artifacts covers the specialised ones.
            _kernels[request.param] = LayerNormKernels(driver, backend=backend, cache_dir=cache_dir, static_shapes=False)
        except RuntimeError as e:
            _kernels[request.param] = e
    if isinstance(_kernels[request.param], Exception):
        pytest.skip(f"{driver}: {_kernels[request.param]}")
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
