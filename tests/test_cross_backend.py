"""Every available backend computes the same function as the host CPU artifact."""

import numpy as np
import pytest
from conftest import BACKENDS, DTYPES, TOLERANCE, random_problem, skip_unsupported

from lnbwd_iree import LayerNormKernels
from lnbwd_iree.reference import relative_error

OTHERS = [b for b in BACKENDS if b != ("local-task", "llvm-cpu")]


@pytest.mark.parametrize("other", OTHERS, ids=lambda b: b[1] or b[0])
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_backends_agree(other, dtype, rng, cache_dir):
    try:
        cpu = LayerNormKernels("local-task", cache_dir=cache_dir)
        kernels = LayerNormKernels(other[0], backend=other[1], cache_dir=cache_dir)
    except RuntimeError as e:
        pytest.skip(str(e))
    skip_unsupported(kernels, dtype)
    dy, x, gamma, beta = random_problem(rng, (37, 300), dtype)
    cpu_out = [np.asarray(r.to_host()) for r in (*cpu.forward(x, gamma, beta), *cpu.backward(dy, x, gamma))]
    out = [np.asarray(r.to_host()) for r in (*kernels.forward(x, gamma, beta), *kernels.backward(dy, x, gamma))]
    for name, a, b in zip(("y", "mean", "rstd", "dx", "dgamma", "dbeta"), out, cpu_out):
        # Two f32 computations in different orders, each rounded once to storage.
        assert relative_error(a, b) < 2 * TOLERANCE[dtype], name
