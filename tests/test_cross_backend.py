"""Every pair of available backends computes the same function on the same inputs."""

import itertools

import numpy as np
import pytest
from conftest import BACKENDS, DTYPES, TOLERANCE, backend_id, open_kernels, random_problem, skip_missing_artifact, skip_unsupported

from lnbwd_iree.reference import relative_error

NAMES = ("y", "mean", "rstd", "dx", "dgamma", "dbeta")


def outputs(backend, dtype, inputs, cache_dir):
    """All six outputs on ``backend``, or a skip naming why it cannot run here:
    no device, a dtype it lacks, or no compiler for a missing artifact. Any
    other error of the kernels fails the test."""
    dy, x, gamma, beta = inputs
    kernels = open_kernels(backend, cache_dir)
    skip_unsupported(kernels, dtype)
    with skip_missing_artifact(backend):
        results = (*kernels.forward(x, gamma, beta), *kernels.backward(dy, x, gamma))
    return [np.asarray(r.to_host()) for r in results]


@pytest.mark.parametrize("pair", list(itertools.combinations(BACKENDS, 2)), ids=lambda p: "-vs-".join(map(backend_id, p)))
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_backends_agree(pair, dtype, rng, cache_dir):
    inputs = random_problem(rng, (37, 300), dtype)
    first, second = (outputs(backend, dtype, inputs, cache_dir) for backend in pair)
    for name, a, b in zip(NAMES, first, second):
        # Two f32 computations in different orders, each rounded once to storage.
        error = relative_error(a, b)
        assert error < 2 * TOLERANCE[dtype], f"{name}: {error:.3g}"
