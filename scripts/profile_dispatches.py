"""Runs the backward a few times for ncu: which dispatch takes the time.

ncu --metrics gpu__time_duration.sum python3 scripts/profile_dispatches.py 8192x4096 f32
"""

import sys

import numpy as np

from lnbwd_iree import LayerNormKernels
from lnbwd_iree.bench import make_inputs, parse_shape

m, n = parse_shape(sys.argv[1])
dtype = sys.argv[2]
kernels = LayerNormKernels("cuda", static_shapes=True)
dy, x, gamma, mean, rstd = (kernels.to_device(a) for a in make_inputs(np.random.default_rng(), m, n, dtype))
for _ in range(3):
    kernels.backward(dy, x, gamma, mean, rstd)
