import os

import ml_dtypes
import numpy as np
import pytest

from lnbwd_iree import LayerNormKernels

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

DTYPES = {"f32": np.float32, "f16": np.float16, "bf16": ml_dtypes.bfloat16, "f64": np.float64}

# Norm-wise relative error bounds. Inputs are first rounded to the storage type
# and the float64 reference sees the rounded values, so what remains is f32
# arithmetic (~1e-7) plus one rounding of each output to storage precision:
# unit roundoff u = 2^-11 (f16) or 2^-8 (bf16), bounded norm-wise by u. The
# tolerance allows 4u for that rounding; f32 allows 100x its arithmetic error.
# f64 (CPUs only) allows 1e-12: its arithmetic error is ~1e-16 per operation.
TOLERANCE = {"f32": 1e-5, "f16": 4 * 2.0**-11, "bf16": 4 * 2.0**-8, "f64": 1e-12}

_kernels: dict = {}


def backend_id(backend) -> str:
    """llvm-cpu / vmvx on local-task, else the driver's name."""
    driver, name = backend
    return name if driver == "local-task" else driver


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A fresh artifact cache for the session, unless LNBWD_IREE_CACHE names one."""
    return os.environ.get("LNBWD_IREE_CACHE") or str(tmp_path_factory.mktemp("cache"))


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
