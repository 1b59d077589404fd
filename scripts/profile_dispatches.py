"""Runs an op's kernels a few times for ncu: which dispatch takes the time.

ncu --metrics gpu__time_duration.sum python3 scripts/profile_dispatches.py 8192x4096 f32 [layernorm|rmsnorm]
"""

import sys

import numpy as np

from lnbwd_iree import LayerNormKernels
from lnbwd_iree.bench import NORM_OPS, TIMED_OPS, parse_shape
from lnbwd_iree.bench.inputs import draw, op_inputs

m, n = parse_shape(sys.argv[1])
dtype = sys.argv[2]
norm = sys.argv[3] if len(sys.argv) > 3 else "layernorm"
kernels = LayerNormKernels("cuda", static_shapes=True)
drawn = draw(np.random.default_rng(), m, n, dtype)
for name in NORM_OPS[norm].values():
    op = TIMED_OPS[name]
    inputs = tuple(kernels.to_device(a) for a in op_inputs(op, drawn, dtype))
    for _ in range(3):
        kernels.call(op.kernel, op.entry.name, inputs, **op.scalars)
kernels.synchronize()
